//! The database's side of readiness: InfluxDB answers, the database exists, and the tag values
//! it holds are known.

use std::time::Duration;

use iot_common::http::Readiness;
use iot_common::{InfluxClient, Shutdown, WriteError};

use crate::{KnownTags, MAX_TAGS_READ};

/// Creates the database once InfluxDB answers (not on every write, as the reference server did),
/// reads the tag values it holds into `tags`, and keeps `ready` current with a ping every few
/// seconds, until `stop` is triggered.
pub async fn watch_influx(
    client: InfluxClient,
    mut create_database: bool,
    tags: KnownTags,
    ready: Readiness,
    stop: Shutdown,
) {
    let mut attempt = 0;
    let mut tags_known = false;
    loop {
        let up = client.ping().await;
        if up && create_database {
            match client.create_database().await {
                Ok(()) => {
                    tracing::info!(database = client.database(), "database ready");
                    create_database = false;
                }
                Err(e) if !e.is_retryable() => {
                    tracing::warn!(error = %e, "cannot create the database; assuming it exists");
                    create_database = false;
                }
                Err(e) => tracing::warn!(error = %e, "cannot create the database yet"),
            }
        }
        if up && !create_database && !tags_known {
            match learn_tags(&client, &tags).await {
                Ok(n) => {
                    tracing::info!(values = n, "tag values of the database read");
                    tags_known = true;
                }
                Err(e) if !e.is_retryable() => {
                    tracing::warn!(error = %e, "cannot read the database's tag values; all count as new");
                    tags_known = true;
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the database's tag values yet"),
            }
        }
        if up != ready.get() {
            if up {
                tracing::info!(url = client.url(), "InfluxDB answers");
            } else {
                tracing::warn!(url = client.url(), "InfluxDB does not answer");
            }
        }
        ready.set(up && !create_database && tags_known);
        attempt = if up { 0 } else { attempt + 1 };
        let pause = if up || attempt > 5 {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(200 << attempt)
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            () = stop.wait() => return,
        }
    }
}

/// Tells the server the `place` and `sensor` values the database holds, so that only values it
/// does not hold count as new. Returns how many it read.
async fn learn_tags(client: &InfluxClient, tags: &KnownTags) -> Result<usize, WriteError> {
    let results = client
        .query(r#"SHOW TAG VALUES WITH KEY IN ("place", "sensor")"#)
        .await?;
    let pairs = results
        .iter()
        .flat_map(|r| &r.series)
        .flat_map(|s| &s.values)
        .filter_map(|row| Some((row.first()?.as_str()?, row.get(1)?.as_str()?)))
        .take(MAX_TAGS_READ);
    let (mut places, mut sensors) = (Vec::new(), Vec::new());
    for (key, value) in pairs {
        match key {
            "place" => places.push(value),
            _ => sensors.push(value),
        }
    }
    tags.learn(places.iter().copied(), sensors.iter().copied());
    Ok(places.len() + sensors.len())
}
