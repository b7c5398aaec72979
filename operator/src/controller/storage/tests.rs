//! The measurement against a real InfluxDB (Debian's influxd, as `make packages` installs it;
//! `tests/influxdb_setup.rs` needs it too): its statistics read as its admin, and the points
//! written between two samples counted exactly.

use std::time::Duration;

use iot_testkit::influx::InfluxServer;
use iot_testkit::wait;

use super::forecast::{Forecast, forecast};
use super::influx::InfluxClient;
use super::stats::{self, Policy, Sample};

const USER: &str = "admin";
const PASSWORD: &str = "s3cret-Pass";

async fn sample(client: &InfluxClient, server: &InfluxServer) -> Sample {
    let body = client
        .stats("127.0.0.1", i32::from(server.port()), USER, PASSWORD)
        .await
        .expect("SHOW STATS as the admin");
    stats::parse(&body).expect("a sample")
}

/// Writes `n` points of one series into `dht`, with distinct timestamps from `first_ns`.
async fn write(server: &InfluxServer, first_ns: i64, n: i64) {
    let body: String = (0..n)
        .map(|i| {
            format!(
                "temperature,place=room1,sensor=sim-1 value={}.5 {}\n",
                i % 30,
                first_ns + i * 1_000_000
            )
        })
        .collect();
    let answer = reqwest::Client::new()
        .post(format!("{}/write?db=dht", server.url()))
        .basic_auth(USER, Some(PASSWORD))
        .body(body)
        .send()
        .await
        .expect("write");
    assert!(answer.status().is_success(), "write: {}", answer.status());
}

#[tokio::test]
async fn points_written_between_two_samples_are_counted_exactly_and_fill_the_forecast() {
    let server = InfluxServer::start_with_auth(USER, PASSWORD).await;
    server.query("", "CREATE DATABASE dht").await;
    server
        .query(
            "",
            "ALTER RETENTION POLICY autogen ON dht DURATION 1d SHARD DURATION 1h DEFAULT",
        )
        .await;
    let client = InfluxClient::default();
    let now_ns = jiff::Timestamp::now().as_nanosecond() as i64;
    write(&server, now_ns, 1000).await;
    let before = sample(&client, &server).await;
    for batch in 1..=3 {
        write(&server, now_ns + batch * 2_000_000_000, 2000).await;
    }
    // A window is at least a second long (shorter ones measure nothing): sample again until
    // InfluxDB's clock says so.
    let after = wait::until("a window of a second", Duration::from_secs(30), || async {
        let s = sample(&client, &server).await;
        let long_enough = s.at.duration_since(before.at).as_secs_f64() >= 1.0;
        long_enough.then_some(s).ok_or_else(|| "not yet".to_owned())
    })
    .await
    .expect("InfluxDB's clock moves");
    let streams = stats::measure(Some(&before), &after).expect("a window of a second or more");
    let dht = streams
        .iter()
        .find(|m| {
            m.policy
                == Policy {
                    database: "dht".into(),
                    retention_policy: "autogen".into(),
                }
        })
        .expect("the dht stream");
    let window = after.at.duration_since(before.at).as_secs_f64();
    let counted = dht.stream.points_per_second * window;
    assert!(
        (counted - 6000.0).abs() < 1e-6,
        "counted {counted} points, wrote 6000"
    );
    assert_eq!(dht.stream.retention, Some(Duration::from_secs(86_400)));
    assert_eq!(dht.stream.shard_group, Duration::from_secs(3600));

    // InfluxDB updates a shard's size on a timer: once it shows, bytes per point follow, and
    // a volume just above what is held fills.
    let measured = wait::until(
        "the shard's size in SHOW STATS",
        Duration::from_secs(60),
        || async {
            let s = sample(&client, &server).await;
            let streams = stats::measure(Some(&before), &s).ok_or("no window")?;
            streams
                .into_iter()
                .find(|m| m.policy.database == "dht" && m.stream.bytes_per_point > 0.0)
                .ok_or_else(|| "no size yet".to_owned())
        },
    )
    .await
    .expect("bytes per point");
    let points = 7000.0;
    assert!(
        (measured.stream.used_bytes / measured.stream.bytes_per_point - points).abs() < 1e-6,
        "{measured:?}"
    );
    let mut stream = measured.stream.clone();
    stream.points_per_second = 10.0;
    let capacity = stream.used_bytes + 10.0 * stream.bytes_per_point * 3600.0;
    let Ok(Forecast::Fills { after }) = forecast(capacity, 0.0, &[stream]) else {
        panic!("expected a fill date");
    };
    assert!((after.as_secs_f64() - 3600.0).abs() < 1.0, "{after:?}");
}

#[tokio::test]
async fn a_wrong_password_is_influxdbs_error_not_a_sample() {
    let server = InfluxServer::start_with_auth(USER, PASSWORD).await;
    let error = InfluxClient::default()
        .stats("127.0.0.1", i32::from(server.port()), USER, "wrong")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("401"), "{error}");
}
