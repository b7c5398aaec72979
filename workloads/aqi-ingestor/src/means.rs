//! Running 24-hour means of PM10 and PM2.5 per sensor, computed here from 5-minute readings: the
//! index when Sensor.Community's own 24-hour file is empty, failing or stale, or when it is not
//! wanted.
//!
//! The rule, as daily means are usually computed from hourly values:
//! - The window of a sensor is the 24 clock hours (UTC) ending with the hour of its newest
//!   reading T: the 23 hours before it and the one in progress.
//! - Each hour's mean is the mean of its readings; the 24-hour mean is the mean of the hourly
//!   means of the hours that hold a reading, so that a dense hour weighs no more than a sparse one.
//! - Coverage is the share of the 24 hours that hold a reading. An index is given only at a
//!   coverage of at least 75 % (18 hours), the usual data-capture rule for daily means.
//! - PM10 and PM2.5 are counted separately; each index needs its own pollutant at 75 %. The
//!   `coverage` written is that of the better-covered one (they are the same for every common
//!   PM sensor), so `aqi` is present exactly when `coverage >= 0.75`.
//! - Values are taken to 0.01 µg/m³ (the feed's precision), so sums are exact integers and the
//!   result does not depend on the order readings arrive in. The mean is written rounded to
//!   0.01 µg/m³ and the index is that of the written mean.
//!
//! Memory is fixed per sensor: 24 hourly sums and counts (288 bytes), the newest time, the
//! coordinates and the series tags; a sensor is forgotten once its newest reading is more than a
//! day older than the newest of the network, and at most [`MAX_SENSORS`] are tracked.

use std::collections::HashMap;

use crate::timestamp::{self, EpochSeconds};
use crate::transform::MEASUREMENT;

mod window;

use window::Window;
#[cfg(test)]
use window::{Mean, PollutantMean};

/// Hours in a window.
pub(crate) const HOURS: u32 = 24;
/// Hours that must hold a reading for an index: 75 % of 24.
pub(crate) const MIN_HOURS: u32 = 18;
/// Most sensors tracked at once; the readings of the rest of a larger network are passed over.
/// InfluxDB's default `max-values-per-tag` (100,000) caps a deployment below this anyway.
pub(crate) const MAX_SENSORS: usize = 100_000;

/// A value in µg/m³ as hundredths, rounded half up (values are non-negative and validated).
pub(crate) fn centi(x: f64) -> Option<u32> {
    let c = (x * 100.0).round();
    (c.is_finite() && (0.0..=f64::from(u32::MAX)).contains(&c)).then_some(c as u32)
}

/// One admitted outdoor reading with at least one PM value, as the window takes it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reading {
    pub(crate) sensor: u64,
    pub(crate) time: EpochSeconds,
    /// Hundredths of µg/m³.
    pub(crate) pm10: Option<u32>,
    pub(crate) pm25: Option<u32>,
    pub(crate) coords: Option<(f64, f64)>,
    /// The series tags, escaped, as in the readings' line: `,sensor_id=1,location_id=2,…`.
    pub(crate) tags: Box<str>,
}

/// One hour of a sensor's stored readings, as InfluxDB sums them.
#[derive(Clone, Debug)]
pub(crate) struct StoredHour<'a> {
    pub(crate) sensor: u64,
    /// Escaped series tags, as in [`Reading::tags`].
    pub(crate) tags: &'a str,
    pub(crate) coords: Option<(f64, f64)>,
    /// The sensor's newest stored reading; hours outside the window ending there are ignored.
    pub(crate) newest: EpochSeconds,
    /// Hours since the epoch.
    pub(crate) hour: u32,
    /// (sum in hundredths of µg/m³, count).
    pub(crate) pm10: Option<(u32, u16)>,
    pub(crate) pm25: Option<(u32, u16)>,
}

/// Every tracked sensor's window.
#[derive(Debug)]
pub(crate) struct Windows {
    /// Boxed: a table grows by doubling, and its empty slots then cost 16 bytes, not 340.
    sensors: HashMap<u64, Box<Window>, foldhash::fast::RandomState>,
    /// The newest reading of any sensor: the clock windows age by (wall-clock time would
    /// forget everything of a replayed old snapshot at once).
    latest: EpochSeconds,
    /// Means are written only for windows that start at or after this hour: before it, the
    /// readings were not rebuilt from InfluxDB after a restart, so the window would be partial.
    complete_from_hour: u32,
}

impl Default for Windows {
    fn default() -> Self {
        Self::new()
    }
}

impl Windows {
    pub(crate) fn new() -> Self {
        Windows {
            sensors: HashMap::default(),
            latest: 0,
            complete_from_hour: 0,
        }
    }

    /// Means are complete only for windows starting at `hour` or later (see the field).
    pub(crate) fn set_complete_from_hour(&mut self, hour: u32) {
        self.complete_from_hour = hour;
    }

    pub(crate) fn len(&self) -> usize {
        self.sensors.len()
    }

    /// Bytes the windows hold (table slots, the windows and their tags), for the gauge.
    pub(crate) fn bytes(&self) -> usize {
        let slot = std::mem::size_of::<(u64, Box<Window>)>() + 1;
        let window = std::mem::size_of::<Window>();
        self.sensors.capacity() * slot
            + self
                .sensors
                .values()
                .map(|w| window + w.tags.len())
                .sum::<usize>()
    }

    fn window(&mut self, sensor: u64, tags: &str) -> Option<&mut Window> {
        if !self.sensors.contains_key(&sensor) && self.sensors.len() >= MAX_SENSORS {
            return None;
        }
        let w = self
            .sensors
            .entry(sensor)
            .or_insert_with(|| Box::new(Window::new(tags.into())));
        Some(w)
    }

    /// Adds a reading that was stored (it is in InfluxDB, or printed in a dry run).
    pub(crate) fn add(&mut self, r: &Reading) {
        self.latest = self.latest.max(r.time);
        let Some(w) = self.window(r.sensor, &r.tags) else {
            return;
        };
        if r.time >= w.newest {
            // The newest reading says where the sensor is now.
            if *w.tags != *r.tags {
                w.tags = r.tags.clone();
            }
            if let Some((lat, lon)) = r.coords {
                w.coords = [lat, lon];
            }
        }
        if let Some(hour) = w.slot(r.time) {
            hour.add(r.pm10, r.pm25);
        }
    }

    /// Adds one stored hour of a sensor, as summed by InfluxDB, when rebuilding after a restart.
    pub(crate) fn add_stored_hour(&mut self, h: &StoredHour<'_>) {
        self.latest = self.latest.max(h.newest);
        let Some(w) = self.window(h.sensor, h.tags) else {
            return;
        };
        if h.newest > w.newest {
            w.advance_to(h.newest);
        }
        if let Some((lat, lon)) = h.coords {
            w.coords = [lat, lon];
        }
        let Some(slot) = w.slot(h.hour.saturating_mul(3600)) else {
            return;
        };
        slot.add_sums(h.pm10, h.pm25);
    }

    /// Forgets sensors whose newest reading left the day that ends with the network's newest.
    pub(crate) fn evict(&mut self) {
        let latest_hour = self.latest / 3600;
        self.sensors
            .retain(|_, w| w.newest_hour() + HOURS > latest_hour);
        if self.sensors.capacity() > 2 * self.sensors.len() + 1024 {
            self.sensors.shrink_to_fit();
        }
    }

    /// The mean of `sensor` at its newest reading.
    #[cfg(test)]
    pub(crate) fn mean(&self, sensor: u64) -> Option<(EpochSeconds, Mean)> {
        self.sensors.get(&sensor).map(|w| (w.newest, w.mean()))
    }

    /// Sensors whose window is complete, in id order, with their newest reading's time.
    pub(crate) fn complete(&self) -> Vec<(u64, EpochSeconds)> {
        let mut out: Vec<(u64, EpochSeconds)> = self
            .sensors
            .iter()
            .filter(|(_, w)| w.newest_hour() + 1 >= self.complete_from_hour + HOURS)
            .map(|(&s, w)| (s, w.newest))
            .collect();
        out.sort_unstable();
        out
    }

    /// Appends the line of `sensor`'s computed mean to `out`; returns whether it has an index.
    ///
    /// ```text
    /// air_quality,sensor_id=1,… P1=12.34,P2=5.67,aqi_pm10=1i,aqi_pm25=1i,aqi=1i,coverage=0.9583,latitude=51.5,longitude=-0.12,origin="computed" <T>
    /// ```
    pub(crate) fn append_line(&self, out: &mut String, sensor: u64) -> Option<bool> {
        let w = self.sensors.get(&sensor)?;
        let mean = w.mean();
        if mean.pm10.is_none() && mean.pm25.is_none() {
            return None;
        }
        use std::fmt::Write as _;
        out.push_str(MEASUREMENT);
        out.push_str(&w.tags);
        let mut sep = ' ';
        let mut field = |out: &mut String, text: std::fmt::Arguments<'_>| {
            out.push(sep);
            sep = ',';
            let _ = out.write_fmt(text);
        };
        if let Some(m) = mean.pm10 {
            field(
                out,
                format_args!("P1={}.{:02}", m.centi / 100, m.centi % 100),
            );
        }
        if let Some(m) = mean.pm25 {
            field(
                out,
                format_args!("P2={}.{:02}", m.centi / 100, m.centi % 100),
            );
        }
        let (a10, a25) = (mean.aqi_pm10(), mean.aqi_pm25());
        if let Some(i) = a10 {
            field(out, format_args!("aqi_pm10={i}i"));
        }
        if let Some(i) = a25 {
            field(out, format_args!("aqi_pm25={i}i"));
        }
        if let Some(i) = a10.max(a25) {
            field(out, format_args!("aqi={i}i"));
        }
        let cov = coverage_ten_thousandths(mean.hours());
        field(
            out,
            format_args!("coverage={}.{:04}", cov / 10_000, cov % 10_000),
        );
        if w.coords.iter().all(|c| c.is_finite()) {
            field(
                out,
                format_args!("latitude={},longitude={}", w.coords[0], w.coords[1]),
            );
        }
        field(out, format_args!("origin=\"computed\""));
        let _ = writeln!(out, " {}", timestamp::to_nanos(w.newest));
        Some(a10.is_some() || a25.is_some())
    }
}

/// `hours / 24` in ten-thousandths, rounded half up: 18 → 7500, 19 → 7917, 24 → 10000.
pub(crate) fn coverage_ten_thousandths(hours: u32) -> u32 {
    (hours * 10_000 + HOURS / 2) / HOURS
}

#[cfg(test)]
mod tests;
