//! Simulation mode: N DHT sensors spread over places, each sending temperature and humidity
//! every interval, as the reference deployment's sensors did. With a directory of keys each
//! sensor is a device speaking DTLS under its own name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iot_common::http::Readiness;
use tokio::sync::watch;

use crate::client::{Client, Credentials, Dtls, HandshakePolicy, KeySource, Transmission};
use crate::deliver::{self, HUMIDITY, TEMPERATURE};
use crate::model::Dht;
use crate::stats::Stats;

#[derive(Clone, Debug)]
pub struct Plan {
    pub server: SocketAddr,
    pub sensors: u32,
    pub places: Vec<String>,
    pub interval: Duration,
    /// Rounds per sensor before exiting; 0 runs until stopped.
    pub rounds: u64,
    pub seed: u64,
    /// Speak DTLS: sensor `sim-<i+1>` is the identity whose key is the file of that name here.
    pub keys_dir: Option<PathBuf>,
}

impl Plan {
    /// Sensor `i` sits at place `i mod places` and is called `sim-<i+1>`.
    pub fn sensor(&self, i: u32) -> (String, String) {
        let place = self.places[i as usize % self.places.len()].clone();
        (place, format!("sim-{}", i + 1))
    }

    /// How sensor `name` talks to the server: over DTLS as the device `name`, or in plain.
    fn dtls(&self, name: &str) -> Option<Dtls> {
        self.keys_dir.as_ref().map(|dir| Dtls {
            credentials: Credentials {
                identity: name.to_string(),
                key: KeySource::Dir(dir.clone()),
            },
            policy: HandshakePolicy::default(),
        })
    }

    /// The query of sensor `name`'s readings: over DTLS none, since the server knows a
    /// device's place and name from its identity.
    fn query(&self, place: &str, name: &str) -> Vec<String> {
        match self.keys_dir {
            Some(_) => Vec::new(),
            None => vec![format!("place={place}"), format!("sensor={name}")],
        }
    }
}

pub async fn run(
    plan: Plan,
    params: Transmission,
    stats: Arc<Stats>,
    ready: Readiness,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut tasks = Vec::new();
    for i in 0..plan.sensors {
        let (place, sensor) = plan.sensor(i);
        let client =
            Client::connect(plan.server, params, stats.clone(), plan.dtls(&sensor)).await?;
        let (plan, stats, ready, stop) = (plan.clone(), stats.clone(), ready.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            sensor_loop(client, plan, i, place, sensor, stats, ready, stop).await
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn sensor_loop(
    client: Client,
    plan: Plan,
    index: u32,
    place: String,
    sensor: String,
    stats: Arc<Stats>,
    ready: Readiness,
    mut stop: watch::Receiver<bool>,
) {
    let mut dht = Dht::new(plan.seed.wrapping_add(u64::from(index)));
    let mut clock = deliver::SensorClock::default();
    let query = plan.query(&place, &sensor);
    // Spread the sensors over the interval instead of sending in lock-step.
    let offset = plan
        .interval
        .mul_f64(f64::from(index) / f64::from(plan.sensors.max(1)));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, plan.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0u64;
    while plan.rounds == 0 || round < plan.rounds {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (t, h) = dht.next();
        let taken_at = clock.now();
        for (path, value) in [(TEMPERATURE, t), (HUMIDITY, h)] {
            // A sensor holds its reading until the server has stored it; meanwhile it takes
            // no new ones (the shutdown signal still ends the wait).
            let sent = deliver::deliver(
                &client,
                deliver::reading(path, value, query.clone(), taken_at),
                &stats,
                None,
            );
            tokio::select! {
                r = sent => match r {
                    Ok(latency) => {
                        ready.set(true);
                        tracing::debug!(%sensor, measurement = path[2], value, ?latency, "stored");
                    }
                    Err(e) => tracing::warn!(%sensor, measurement = path[2], value, error = %e, "reading not stored"),
                },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        round += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensors_are_spread_over_places_round_robin() {
        let plan = Plan {
            server: ([127, 0, 0, 1], 5683).into(),
            sensors: 5,
            places: vec!["kitchen".into(), "lab".into()],
            interval: Duration::from_secs(5),
            rounds: 0,
            seed: 1,
            keys_dir: None,
        };
        let got: Vec<_> = (0..5).map(|i| plan.sensor(i)).collect();
        assert_eq!(got[0], ("kitchen".into(), "sim-1".into()));
        assert_eq!(got[1], ("lab".into(), "sim-2".into()));
        assert_eq!(got[4], ("kitchen".into(), "sim-5".into()));
        assert_eq!(plan.query("lab", "sim-2"), ["place=lab", "sensor=sim-2"]);
    }

    #[test]
    fn over_dtls_a_sensor_is_the_device_of_its_name_and_sends_no_tags() {
        let plan = Plan {
            server: ([127, 0, 0, 1], 5684).into(),
            sensors: 2,
            places: vec!["lab".into()],
            interval: Duration::from_secs(5),
            rounds: 0,
            seed: 1,
            keys_dir: Some("/keys".into()),
        };
        let dtls = plan.dtls("sim-2").unwrap();
        assert_eq!(dtls.credentials.identity, "sim-2");
        assert!(
            matches!(dtls.credentials.key, KeySource::Dir(d) if d == std::path::Path::new("/keys"))
        );
        assert!(plan.query("lab", "sim-2").is_empty());
    }
}
