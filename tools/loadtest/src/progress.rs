//! The progress line shown while the load runs, and the summary at the end (pure).

use std::fmt::Write as _;

use super::meter::{Percentiles, Verdict};
use super::timeline::{HpaReplicas, Sample};

/// One line: time, phase, load, latency, the component's replicas and its pods' CPU.
pub fn line(sample: &Sample, planned_s: f64, component: &str, phase: Option<&str>) -> String {
    let mut s = format!("[{:4.0}s/{planned_s:.0}s]", sample.elapsed_s);
    if let Some(phase) = phase {
        let _ = write!(s, " {phase} |");
    }
    let load = &sample.load;
    if let Some(users) = load.users {
        let _ = write!(s, " users {users}");
    }
    if load.users.is_some() || load.sent > 0 || load.failed > 0 {
        let _ = write!(
            s,
            " sent {} acked {} failed {}",
            load.sent, load.acked, load.failed
        );
    }
    if let Some(w) = load.window {
        let _ = write!(s, " | p95 {:.1} ms p99 {:.1} ms", w.p95_ms, w.p99_ms);
    }
    let hpa: HpaReplicas = if component == "grafana" {
        sample.grafana
    } else {
        sample.coap_server
    };
    match (hpa.current, hpa.desired) {
        (Some(c), Some(d)) if c != d => {
            let _ = write!(s, " | {component} replicas {c} → {d}");
        }
        (Some(c), _) => {
            let _ = write!(s, " | {component} replicas {c}");
        }
        _ => {}
    }
    let cpu: Vec<String> = sample
        .pods
        .iter()
        .filter(|p| p.component == component)
        .filter_map(|p| p.cpu_pct())
        .map(|pct| format!("{pct:.0}%"))
        .collect();
    if !cpu.is_empty() {
        let _ = write!(s, " | CPU {}", cpu.join(" "));
    }
    s
}

/// The closing report: what was sent, the latency over the run, and each threshold.
pub fn summary(
    counts: (u64, u64, u64),
    total: Option<&Percentiles>,
    verdicts: &[Verdict],
) -> String {
    let (sent, acked, failed) = counts;
    let mut s = format!("load: sent {sent}, acknowledged {acked}, failed {failed}\n");
    match total {
        Some(p) => {
            let _ = writeln!(
                s,
                "latency over the run: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
                p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms, p.count
            );
        }
        None => s.push_str("latency over the run: no request was acknowledged\n"),
    }
    for v in verdicts {
        let value = v
            .value_ms
            .map_or_else(|| "none".to_owned(), |ms| format!("{ms:.1} ms"));
        let _ = writeln!(
            s,
            "threshold {} ≤ {:.0} ms: {value} → {}",
            v.metric,
            v.limit_ms,
            if v.pass { "pass" } else { "FAIL" }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::LoadSample;
    use crate::timeline::PodSample;

    #[test]
    fn the_line_shows_load_latency_replicas_and_cpu() {
        let sample = Sample {
            elapsed_s: 42.0,
            grafana: HpaReplicas {
                desired: Some(3),
                current: Some(2),
            },
            pods: vec![PodSample {
                name: "g".into(),
                component: "grafana".into(),
                cpu_m: Some(61.0),
                cpu_request_m: Some(100.0),
                ..PodSample::default()
            }],
            load: LoadSample {
                users: Some(12),
                sent: 420,
                acked: 419,
                failed: 1,
                window: Some(Percentiles {
                    p95_ms: 12.34,
                    p99_ms: 20.0,
                    ..Percentiles::default()
                }),
            },
            ..Sample::default()
        };
        assert_eq!(
            line(&sample, 600.0, "grafana", Some("Stage 2")),
            "[  42s/600s] Stage 2 | users 12 sent 420 acked 419 failed 1 | p95 12.3 ms p99 20.0 ms \
             | grafana replicas 2 → 3 | CPU 61%"
        );
    }

    #[test]
    fn without_load_the_line_shows_only_the_cluster() {
        let sample = Sample {
            elapsed_s: 5.0,
            coap_server: HpaReplicas {
                desired: Some(1),
                current: Some(1),
            },
            ..Sample::default()
        };
        assert_eq!(
            line(&sample, 60.0, "coap-server", None),
            "[   5s/60s] | coap-server replicas 1"
        );
    }

    #[test]
    fn the_summary_says_pass_or_fail_per_threshold() {
        let p = Percentiles {
            p95_ms: 80.0,
            p99_ms: 90.0,
            count: 5,
            ..Percentiles::default()
        };
        let verdicts = [
            Verdict {
                metric: "p95",
                value_ms: Some(80.0),
                limit_ms: 75.0,
                pass: false,
            },
            Verdict {
                metric: "p99",
                value_ms: Some(90.0),
                limit_ms: 100.0,
                pass: true,
            },
        ];
        let s = summary((10, 9, 1), Some(&p), &verdicts);
        assert!(s.contains("threshold p95 ≤ 75 ms: 80.0 ms → FAIL"), "{s}");
        assert!(s.contains("threshold p99 ≤ 100 ms: 90.0 ms → pass"), "{s}");
    }
}
