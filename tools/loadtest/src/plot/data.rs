//! What the plot draws, computed from the timeline's rows: per-pod CPU, the HPA's replicas as
//! steps, and the load as rates. Pure; [`super::render`] draws it.

use std::collections::BTreeMap;

use crate::timeline::Row;

/// The series to draw, in plot units.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlotData {
    /// Pod name → (elapsed s, CPU); percent of the request when every pod has one, else millicores.
    pub cpu: BTreeMap<String, Vec<(f64, f64)>>,
    /// Whether `cpu` is in percent of the request (else millicores, without thresholds).
    pub cpu_is_percent: bool,
    /// HPA replicas as step points (each change drawn as a vertical edge).
    pub desired: Vec<(f64, f64)>,
    /// Current replicas, likewise.
    pub current: Vec<(f64, f64)>,
    /// Acknowledged and failed requests per second.
    pub acked_per_s: Vec<(f64, f64)>,
    /// Failed requests per second.
    pub failed_per_s: Vec<(f64, f64)>,
    /// The last second recorded: the time axis' end.
    pub end_s: f64,
}

impl PlotData {
    /// The series of `component` (`grafana` or `coap-server`) from the timeline's rows.
    pub fn from_rows(rows: &[Row], component: &str) -> Self {
        let mine = |r: &&Row| r.pod.as_ref().is_some_and(|p| p.component == component);
        let cpu_is_percent = rows
            .iter()
            .filter(mine)
            .filter_map(|r| r.pod.as_ref())
            .filter(|p| p.cpu_m.is_some())
            .all(|p| p.cpu_pct().is_some());
        let mut cpu: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for r in rows.iter().filter(mine) {
            let Some(p) = &r.pod else { continue };
            let value = if cpu_is_percent { p.cpu_pct() } else { p.cpu_m };
            if let Some(v) = value {
                cpu.entry(p.name.clone())
                    .or_default()
                    .push((r.elapsed_s, v));
            }
        }
        // One value per second for the per-sample columns (rows of a second repeat them).
        let mut seconds: Vec<&Row> = Vec::new();
        for r in rows {
            if seconds.last().is_none_or(|l| l.elapsed_s != r.elapsed_s) {
                seconds.push(r);
            }
        }
        let hpa = |r: &Row| {
            if component == "grafana" {
                r.grafana
            } else {
                r.coap_server
            }
        };
        let steps = |value: &dyn Fn(&Row) -> Option<i32>| {
            let points: Vec<(f64, f64)> = seconds
                .iter()
                .filter_map(|r| value(r).map(|v| (r.elapsed_s, f64::from(v))))
                .collect();
            step_points(&points)
        };
        let rate = |value: &dyn Fn(&Row) -> u64| {
            seconds
                .windows(2)
                .filter(|w| w[1].elapsed_s > w[0].elapsed_s)
                .map(|w| {
                    let dt = w[1].elapsed_s - w[0].elapsed_s;
                    let dv = value(w[1]).saturating_sub(value(w[0])) as f64;
                    (w[1].elapsed_s, dv / dt)
                })
                .collect::<Vec<_>>()
        };
        Self {
            cpu,
            cpu_is_percent,
            desired: steps(&|r| hpa(r).desired),
            current: steps(&|r| hpa(r).current),
            acked_per_s: rate(&|r| r.acked),
            failed_per_s: rate(&|r| r.failed),
            end_s: rows.iter().map(|r| r.elapsed_s).fold(0.0, f64::max),
        }
    }
}

/// `(t, v)` samples → the corners of a step line that holds each value until the next change.
pub fn step_points(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(points.len() * 2);
    for &(t, v) in points {
        match out.last() {
            Some(&(_, last)) if last == v => {}
            Some(&(_, last)) => {
                out.push((t, last));
                out.push((t, v));
            }
            None => out.push((t, v)),
        }
    }
    // The line runs on to the last sample, not only to the last change.
    if let (Some(&(t, _)), Some(&(last_t, v))) = (points.last(), out.last())
        && last_t < t
    {
        out.push((t, v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{HpaReplicas, PodSample};

    #[test]
    fn steps_hold_each_value_until_it_changes() {
        let s = step_points(&[(0.0, 1.0), (1.0, 1.0), (2.0, 2.0), (3.0, 2.0), (4.0, 1.0)]);
        assert_eq!(
            s,
            vec![(0.0, 1.0), (2.0, 1.0), (2.0, 2.0), (4.0, 2.0), (4.0, 1.0)]
        );
        assert_eq!(
            step_points(&[(0.0, 3.0), (5.0, 3.0)]),
            vec![(0.0, 3.0), (5.0, 3.0)]
        );
        assert!(step_points(&[]).is_empty());
    }

    #[test]
    fn plot_data_picks_the_component_and_derives_rates() {
        let row = |t: f64, acked: u64, pod: &str, component: &str, cpu: f64| Row {
            elapsed_s: t,
            acked,
            coap_server: HpaReplicas {
                desired: Some(if t < 2.0 { 1 } else { 2 }),
                current: Some(1),
            },
            pod: Some(PodSample {
                name: pod.into(),
                component: component.into(),
                state: "Ready".into(),
                cpu_m: Some(cpu),
                cpu_request_m: Some(50.0),
                memory_mib: None,
            }),
            ..Row::default()
        };
        let rows = vec![
            row(0.0, 0, "a", "coap-server", 10.0),
            row(0.0, 0, "g", "grafana", 99.0),
            row(1.0, 100, "a", "coap-server", 40.0),
            row(2.0, 300, "a", "coap-server", 50.0),
        ];
        let d = PlotData::from_rows(&rows, "coap-server");
        assert!(d.cpu_is_percent);
        assert_eq!(d.cpu.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(d.cpu["a"], vec![(0.0, 20.0), (1.0, 80.0), (2.0, 100.0)]);
        assert_eq!(d.acked_per_s, vec![(1.0, 100.0), (2.0, 200.0)]);
        assert_eq!(d.desired, vec![(0.0, 1.0), (2.0, 1.0), (2.0, 2.0)]);
        assert_eq!(d.end_s, 2.0);
    }
}
