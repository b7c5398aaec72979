//! The timeline: one sample a second of the HPAs, the pods and the load, as CSV rows (pure).
//!
//! One row per pod per second, like the reference's `metrics.csv` (one row per instance per
//! second); the HPA and load columns repeat on every row of a second, so any row can be read
//! alone. A second with no pods has one row with the pod columns empty. docs/loadtest.md
//! describes every column.

use std::fmt::Write as _;

use super::meter::LoadSample;

/// The CSV's first line: the columns of docs/loadtest.md, in order.
pub const HEADER: &str = "time,elapsed_s,grafana_hpa_desired,grafana_hpa_current,\
coap_server_hpa_desired,coap_server_hpa_current,pod,component,state,cpu_m,cpu_request_m,\
cpu_pct,memory_mib,users,sent,acked,failed,p50_ms,p95_ms,p99_ms";

/// Desired and current replicas of one HPA; `None` when the HPA does not exist (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HpaReplicas {
    /// `status.desiredReplicas`; `None` until the HPA has computed one.
    pub desired: Option<i32>,
    /// `status.currentReplicas`.
    pub current: Option<i32>,
}

/// One pod as seen at one second.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodSample {
    /// The pod's name.
    pub name: String,
    /// The pod's `app.kubernetes.io/name` label: grafana, coap-server, influxdb, ...
    pub component: String,
    /// Pending, Running (not ready), Ready, Terminating, Succeeded or Failed.
    pub state: String,
    /// From metrics.k8s.io; `None` until metrics-server has a point for the pod.
    pub cpu_m: Option<f64>,
    /// Sum of the containers' CPU requests.
    pub cpu_request_m: Option<f64>,
    /// Working-set memory from metrics.k8s.io, MiB.
    pub memory_mib: Option<f64>,
}

impl PodSample {
    /// CPU in percent of the request: what the HPA's utilization target compares against.
    pub fn cpu_pct(&self) -> Option<f64> {
        match (self.cpu_m, self.cpu_request_m) {
            (Some(cpu), Some(request)) if request > 0.0 => Some(cpu / request * 100.0),
            _ => None,
        }
    }
}

/// Everything recorded at one second.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// RFC 3339, UTC.
    pub time: String,
    /// Seconds since the recording started.
    pub elapsed_s: f64,
    /// The Grafana HPA.
    pub grafana: HpaReplicas,
    /// The coap-server HPA.
    pub coap_server: HpaReplicas,
    /// Every pod of the monitor, the load Job's included.
    pub pods: Vec<PodSample>,
    /// What the load did up to and during this second.
    pub load: LoadSample,
}

/// One CSV row: a sample's shared columns and (at most) one pod.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    /// When the sample was taken, RFC 3339 UTC.
    pub time: String,
    /// Seconds since the recording started.
    pub elapsed_s: f64,
    /// The Grafana HPA.
    pub grafana: HpaReplicas,
    /// The coap-server HPA.
    pub coap_server: HpaReplicas,
    /// This row's pod; `None` in a second without pods.
    pub pod: Option<PodSample>,
    /// Virtual users running (`--target grafana` only).
    pub users: Option<u64>,
    /// Requests or readings sent since the start.
    pub sent: u64,
    /// Acknowledged since the start.
    pub acked: u64,
    /// Given up since the start.
    pub failed: u64,
    /// Median latency of what was acknowledged in this second.
    pub p50_ms: Option<f64>,
    /// 95th percentile, likewise.
    pub p95_ms: Option<f64>,
    /// 99th percentile, likewise.
    pub p99_ms: Option<f64>,
}

impl Sample {
    /// One row per pod (by component, then name), or one without a pod when there is none.
    pub fn rows(&self) -> Vec<Row> {
        let w = self.load.window;
        let row = |pod: Option<PodSample>| Row {
            time: self.time.clone(),
            elapsed_s: self.elapsed_s,
            grafana: self.grafana,
            coap_server: self.coap_server,
            pod,
            users: self.load.users,
            sent: self.load.sent,
            acked: self.load.acked,
            failed: self.load.failed,
            p50_ms: w.map(|p| p.p50_ms),
            p95_ms: w.map(|p| p.p95_ms),
            p99_ms: w.map(|p| p.p99_ms),
        };
        if self.pods.is_empty() {
            return vec![row(None)];
        }
        let mut pods = self.pods.clone();
        pods.sort_by(|a, b| (&a.component, &a.name).cmp(&(&b.component, &b.name)));
        pods.into_iter().map(|p| row(Some(p))).collect()
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(String::new, |v| format!("{v:.decimals$}"))
}

/// A field as CSV: quoted when it holds a separator, a quote or a line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

impl Row {
    /// The row as one CSV line (with its line break).
    pub fn to_csv(&self) -> String {
        let pod = self.pod.as_ref();
        let mut line = String::with_capacity(160);
        let _ = writeln!(
            line,
            "{},{:.1},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            field(&self.time),
            self.elapsed_s,
            opt(self.grafana.desired),
            opt(self.grafana.current),
            opt(self.coap_server.desired),
            opt(self.coap_server.current),
            field(pod.map_or("", |p| &p.name)),
            field(pod.map_or("", |p| &p.component)),
            field(pod.map_or("", |p| &p.state)),
            num(pod.and_then(|p| p.cpu_m), 1),
            num(pod.and_then(|p| p.cpu_request_m), 0),
            num(pod.and_then(PodSample::cpu_pct), 1),
            num(pod.and_then(|p| p.memory_mib), 1),
            opt(self.users),
            self.sent,
            self.acked,
            self.failed,
            num(self.p50_ms, 2),
            num(self.p95_ms, 2),
            num(self.p99_ms, 2),
        );
        line
    }
}

/// A line of a timeline that does not read back.
#[derive(Debug, thiserror::Error)]
#[error("timeline.csv line {line}: {message}")]
pub struct CsvError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Reads a timeline written by [`Row::to_csv`] under [`HEADER`] (for re-plotting and tests).
/// Fields are never quoted by our writer for the names Kubernetes allows, so a plain split
/// suffices; a quoted field is an error rather than a misread.
pub fn parse_csv(text: &str) -> Result<Vec<Row>, CsvError> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h == HEADER => {}
        _ => {
            return Err(CsvError {
                line: 1,
                message: "the header is not the timeline header".into(),
            });
        }
    }
    lines
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            parse_row(l).map_err(|message| CsvError {
                line: i + 1,
                message,
            })
        })
        .collect()
}

fn parse_row(line: &str) -> Result<Row, String> {
    let f: Vec<&str> = line.split(',').collect();
    if f.len() != 20 || line.contains('"') {
        return Err(format!("expected 20 plain fields, got {}", f.len()));
    }
    fn o<T: std::str::FromStr>(s: &str) -> Result<Option<T>, String> {
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse()
                .map(Some)
                .map_err(|_| format!("cannot read {s:?}"))
        }
    }
    fn n<T: std::str::FromStr>(s: &str) -> Result<T, String> {
        s.parse().map_err(|_| format!("cannot read {s:?}"))
    }
    let pod = if f[6].is_empty() {
        None
    } else {
        Some(PodSample {
            name: f[6].to_owned(),
            component: f[7].to_owned(),
            state: f[8].to_owned(),
            cpu_m: o(f[9])?,
            cpu_request_m: o(f[10])?,
            memory_mib: o(f[12])?,
        })
    };
    Ok(Row {
        time: f[0].to_owned(),
        elapsed_s: n(f[1])?,
        grafana: HpaReplicas {
            desired: o(f[2])?,
            current: o(f[3])?,
        },
        coap_server: HpaReplicas {
            desired: o(f[4])?,
            current: o(f[5])?,
        },
        pod,
        users: o(f[13])?,
        sent: n(f[14])?,
        acked: n(f[15])?,
        failed: n(f[16])?,
        p50_ms: o(f[17])?,
        p95_ms: o(f[18])?,
        p99_ms: o(f[19])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::Percentiles;

    fn pod(name: &str, component: &str, cpu: Option<f64>) -> PodSample {
        PodSample {
            name: name.into(),
            component: component.into(),
            state: "Ready".into(),
            cpu_m: cpu,
            cpu_request_m: Some(50.0),
            memory_mib: Some(12.5),
        }
    }

    fn sample() -> Sample {
        Sample {
            time: "2026-01-01T00:00:03.000Z".into(),
            elapsed_s: 3.0,
            grafana: HpaReplicas::default(),
            coap_server: HpaReplicas {
                desired: Some(2),
                current: Some(1),
            },
            pods: vec![
                pod("lab-coap-server-b", "coap-server", None),
                pod("lab-coap-server-a", "coap-server", Some(45.0)),
            ],
            load: LoadSample {
                users: None,
                sent: 10,
                acked: 9,
                failed: 0,
                window: Some(Percentiles {
                    p50_ms: 1.0,
                    p95_ms: 2.5,
                    p99_ms: 3.25,
                    ..Percentiles::default()
                }),
            },
        }
    }

    #[test]
    fn one_row_per_pod_sorted_with_the_shared_columns_repeated() {
        let csv: Vec<String> = sample().rows().iter().map(Row::to_csv).collect();
        assert_eq!(
            csv,
            vec![
                "2026-01-01T00:00:03.000Z,3.0,,,2,1,lab-coap-server-a,coap-server,Ready,45.0,50,90.0,12.5,,10,9,0,1.00,2.50,3.25\n",
                "2026-01-01T00:00:03.000Z,3.0,,,2,1,lab-coap-server-b,coap-server,Ready,,50,,12.5,,10,9,0,1.00,2.50,3.25\n",
            ]
        );
        assert_eq!(HEADER.split(',').count(), 20);
    }

    #[test]
    fn a_second_without_pods_still_has_a_row() {
        let s = Sample {
            pods: vec![],
            ..sample()
        };
        let rows = s.rows();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].to_csv().contains(",2,1,,,,,,,,,10,9,0,"));
    }

    #[test]
    fn rows_read_back_as_written() {
        let rows = sample().rows();
        let mut text = format!("{HEADER}\n");
        rows.iter().for_each(|r| text.push_str(&r.to_csv()));
        assert_eq!(parse_csv(&text).unwrap(), rows);
    }

    #[test]
    fn a_foreign_file_is_refused() {
        assert!(parse_csv("a,b\n1,2\n").is_err());
        assert!(parse_csv(&format!("{HEADER}\n1,2\n")).is_err());
    }

    #[test]
    fn fields_with_separators_are_quoted() {
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("plain"), "plain");
    }
}
