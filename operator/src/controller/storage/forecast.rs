//! When the data volume fills: a pure function of what InfluxDB holds and writes, stream by
//! stream. A stream is one retention policy of one database (a downsampling tier is one more
//! stream): it grows at its write rate times its bytes per point until its retention starts
//! dropping old shards, and then stays at a steady size. The volume fills when the streams'
//! sum reaches its capacity; if every stream's steady size fits, it never does.

use std::time::Duration;

/// One retention policy of one database, as measured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stream {
    /// Bytes its shards hold now.
    pub(crate) used_bytes: f64,
    /// Points written per second.
    pub(crate) points_per_second: f64,
    /// Bytes on disk per point written.
    pub(crate) bytes_per_point: f64,
    /// How long its points are kept; `None`: forever (`INF`).
    pub(crate) retention: Option<Duration>,
    /// Its shard group duration: InfluxDB drops a whole shard group once its newest point is
    /// older than the retention, so a stream keeps up to retention + one group.
    pub(crate) shard_group: Duration,
}

impl Stream {
    /// Bytes per second it adds while its retention drops nothing.
    fn growth(&self) -> f64 {
        sane(self.points_per_second) * sane(self.bytes_per_point)
    }

    /// The size it settles at once its retention drops as much as it writes; `None` when it
    /// grows forever.
    fn steady_bytes(&self) -> Option<f64> {
        let kept = self.retention? + self.shard_group;
        Some(self.growth() * kept.as_secs_f64())
    }

    /// Its size after `t` seconds. A stream above its steady size (its retention was just
    /// shortened, or it was backfilled) is taken to stay where it is: the shards drop on the
    /// retention service's schedule, and a forecast that waits for them errs on the safe side.
    fn size_after(&self, t: f64) -> f64 {
        let used = sane(self.used_bytes);
        let grown = used + self.growth() * t;
        match self.steady_bytes() {
            Some(steady) if used >= steady => used,
            Some(steady) => grown.min(steady),
            None => grown,
        }
    }

    /// When it reaches its steady size (seconds from now), if it grows and ever stops.
    fn settles_after(&self) -> Option<f64> {
        let steady = self.steady_bytes()?;
        let growth = self.growth();
        let used = sane(self.used_bytes);
        (growth > 0.0 && steady > used).then(|| (steady - used) / growth)
    }

    /// It still grows `t` seconds from now.
    fn grows_after(&self, t: f64) -> bool {
        match (self.steady_bytes(), self.settles_after()) {
            (None, _) => true,
            (Some(_), Some(settles)) => settles > t,
            (Some(_), None) => false,
        }
    }
}

/// What the volume is expected to do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Forecast {
    /// Never fills: every stream settles and the sum fits. `steady_bytes` is that sum.
    Fits { steady_bytes: f64 },
    /// Fills `after` from now.
    Fills { after: Duration },
    /// Already at or over capacity.
    Full,
}

/// Why no forecast can be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ForecastError {
    #[error("the volume reports no capacity")]
    NoCapacity,
}

/// The forecast for a volume of `capacity` bytes holding `other_bytes` outside the streams
/// (InfluxDB's index and metadata; 0 when unknown) and the `streams`. Figures that are not
/// finite or negative count as 0.
pub(crate) fn forecast(
    capacity: f64,
    other_bytes: f64,
    streams: &[Stream],
) -> Result<Forecast, ForecastError> {
    if !(capacity.is_finite() && capacity > 0.0) {
        return Err(ForecastError::NoCapacity);
    }
    let total = |t: f64| sane(other_bytes) + streams.iter().map(|s| s.size_after(t)).sum::<f64>();
    if total(0.0) >= capacity {
        return Ok(Forecast::Full);
    }
    // The total is piecewise linear and never falls: linear between the moments streams
    // settle. Walk those moments; the capacity is crossed on the first piece that reaches it.
    let mut breaks: Vec<f64> = streams.iter().filter_map(Stream::settles_after).collect();
    breaks.sort_by(f64::total_cmp);
    let mut start = 0.0;
    for end in breaks.into_iter().chain([f64::INFINITY]) {
        let at_start = total(start);
        // The slope of this piece: the growth of the streams that have not settled by then.
        let slope: f64 = streams
            .iter()
            .filter(|s| s.grows_after(start))
            .map(Stream::growth)
            .sum();
        if slope > 0.0 {
            let crossing = start + (capacity - at_start) / slope;
            if crossing <= end {
                return Ok(Forecast::Fills {
                    after: Duration::try_from_secs_f64(crossing).unwrap_or(Duration::MAX),
                });
            }
        }
        start = end;
    }
    // Every stream has settled or writes nothing (f64::MAX, not infinity: 0 × ∞ is NaN).
    Ok(Forecast::Fits {
        steady_bytes: total(f64::MAX),
    })
}

/// Non-finite or negative figures (a counter reset, a division by nothing) count as nothing.
fn sane(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    const MIB: f64 = 1024.0 * 1024.0;

    fn stream(used: f64, pps: f64, bpp: f64, retention_days: Option<u64>) -> Stream {
        Stream {
            used_bytes: used,
            points_per_second: pps,
            bytes_per_point: bpp,
            retention: retention_days.map(|d| Duration::from_secs(d * DAY)),
            shard_group: Duration::from_secs(DAY),
        }
    }

    fn days(f: &Forecast) -> f64 {
        match f {
            Forecast::Fills { after } => after.as_secs_f64() / DAY as f64,
            other => panic!("expected a fill date, got {other:?}"),
        }
    }

    /// A volume filled step by step at a known rate (points written, bytes added per point,
    /// retention dropping whole shard groups) reaches its capacity at a simulated time; the
    /// forecast made early on, from what is measured then, is within 10 % of it.
    #[test]
    fn a_volume_filled_at_a_known_rate_fills_within_ten_percent_of_the_truth() {
        let capacity = 1024.0 * MIB;
        let (pps, bpp) = (40.0, 12.0);
        // Truth: simulate hour by hour, with 30 d retention in 1 d shard groups.
        let mut groups: Vec<(u64, f64)> = Vec::new(); // (group start hour, bytes)
        let mut hour = 0u64;
        let fill_hour = loop {
            let group = hour / 24 * 24;
            match groups.last_mut() {
                Some((start, bytes)) if *start == group => *bytes += pps * bpp * 3600.0,
                _ => groups.push((group, pps * bpp * 3600.0)),
            }
            hour += 1;
            // A group goes once its end is older than the retention.
            groups.retain(|(start, _)| (start + 24) + 30 * 24 > hour);
            if groups.iter().map(|(_, b)| b).sum::<f64>() >= capacity {
                break hour;
            }
            assert!(hour < 24 * 3650, "never filled");
        };
        // Measured on day 2: what the shards hold and the rate.
        let used = pps * bpp * 2.0 * DAY as f64;
        let f = forecast(capacity, 0.0, &[stream(used, pps, bpp, Some(30))]).unwrap();
        let predicted = days(&f) + 2.0;
        let truth = fill_hour as f64 / 24.0;
        assert!(
            (predicted - truth).abs() <= 0.1 * truth,
            "predicted day {predicted:.2}, truth day {truth:.2}"
        );
    }

    #[test]
    fn a_stream_whose_steady_size_fits_never_fills() {
        // 1 point/s at 3 B for 30 d (+1 d group) is about 8 MB.
        let f = forecast(64.0 * MIB, 0.0, &[stream(1.0 * MIB, 1.0, 3.0, Some(30))]).unwrap();
        let Forecast::Fits { steady_bytes } = f else {
            panic!("expected Fits, got {f:?}")
        };
        assert!((steady_bytes - 3.0 * 31.0 * DAY as f64).abs() < 1.0);
    }

    #[test]
    fn infinite_retention_fills_at_the_write_rate() {
        // 10 MiB free, 1 KiB/s: 10,240 s.
        let f = forecast(20.0 * MIB, 0.0, &[stream(10.0 * MIB, 100.0, 10.24, None)]).unwrap();
        let Forecast::Fills { after } = f else {
            panic!("{f:?}")
        };
        assert!((after.as_secs_f64() - 10_240.0).abs() < 1.0, "{after:?}");
    }

    #[test]
    fn a_shorter_retention_turns_a_fill_date_into_fits() {
        let long = stream(0.0, 50.0, 4.0, Some(365));
        let short = Stream {
            retention: Some(Duration::from_secs(7 * DAY)),
            ..long.clone()
        };
        let capacity = 1024.0 * MIB;
        assert!(matches!(
            forecast(capacity, 0.0, &[long]),
            Ok(Forecast::Fills { .. })
        ));
        assert!(matches!(
            forecast(capacity, 0.0, &[short]),
            Ok(Forecast::Fits { .. })
        ));
    }

    #[test]
    fn a_settled_stream_stops_adding_and_the_others_go_on() {
        // Stream a settles after 1 d at 86.4 MB; b grows 1,000 B/s forever. Capacity 200 MB:
        // 86.4 MB (a) + 1,000 t (b) = 200 MB at t = 113,600 s.
        let a = Stream {
            retention: Some(Duration::ZERO),
            ..stream(0.0, 1000.0, 1.0, None)
        };
        let b = stream(0.0, 1000.0, 1.0, None);
        let f = forecast(200e6, 0.0, &[a, b]).unwrap();
        let Forecast::Fills { after } = f else {
            panic!("{f:?}")
        };
        assert!((after.as_secs_f64() - 113_600.0).abs() < 1.0, "{after:?}");
    }

    #[test]
    fn downsampling_tiers_are_streams_of_their_own() {
        // Raw data for 7 d, a 5-minute tier for a year at 1/300 of the points (4 per aggregate).
        let raw = stream(0.0, 100.0, 3.0, Some(7));
        let tier = stream(0.0, 100.0 / 300.0 * 4.0, 8.0, Some(365));
        let f = forecast(1024.0 * MIB, 0.0, &[raw.clone(), tier.clone()]).unwrap();
        // Raw alone: 100 * 3 * 8 d = 207 MB fits; the tier adds 10.7 B/s for a year, 336 MB.
        let Forecast::Fits { steady_bytes } = f else {
            panic!("{f:?}")
        };
        let expected = 300.0 * 8.0 * DAY as f64 + (400.0 / 300.0 * 8.0) * 366.0 * DAY as f64;
        assert!((steady_bytes - expected).abs() < 1.0);
    }

    #[test]
    fn nothing_written_fits_at_todays_size() {
        let f = forecast(64.0 * MIB, 1.0 * MIB, &[stream(5.0 * MIB, 0.0, 3.0, None)]).unwrap();
        assert_eq!(
            f,
            Forecast::Fits {
                steady_bytes: 6.0 * MIB
            }
        );
    }

    #[test]
    fn a_volume_at_capacity_is_full() {
        let f = forecast(64.0 * MIB, 0.0, &[stream(64.0 * MIB, 1.0, 3.0, Some(30))]).unwrap();
        assert_eq!(f, Forecast::Full);
    }

    #[test]
    fn a_stream_above_its_steady_size_stays_there() {
        // Retention just shortened: 50 MiB held, steady would be 2.7 MB; it neither grows nor
        // is assumed gone.
        let s = stream(50.0 * MIB, 1.0, 1.0, Some(30));
        assert_eq!(s.size_after(1e9), 50.0 * MIB);
        let f = forecast(64.0 * MIB, 0.0, &[s]).unwrap();
        assert_eq!(
            f,
            Forecast::Fits {
                steady_bytes: 50.0 * MIB
            }
        );
    }

    #[test]
    fn bad_figures_count_as_nothing_and_no_capacity_is_an_error() {
        let bad = stream(f64::NAN, -5.0, f64::INFINITY, None);
        assert_eq!(
            forecast(64.0 * MIB, f64::NAN, &[bad]),
            Ok(Forecast::Fits { steady_bytes: 0.0 })
        );
        assert_eq!(forecast(0.0, 0.0, &[]), Err(ForecastError::NoCapacity));
        assert_eq!(forecast(f64::NAN, 0.0, &[]), Err(ForecastError::NoCapacity));
    }
}
