//! One sensor's window: 24 hourly sums and counts, sliding with its newest reading, and the
//! 24-hour means they give (the rule is in the parent module's documentation).

use super::{HOURS, MIN_HOURS};
use crate::daqi;
use crate::timestamp::EpochSeconds;

#[derive(Debug)]
pub(super) struct Window {
    pub(super) tags: Box<str>,
    /// NaN when unknown.
    pub(super) coords: [f64; 2],
    pub(super) newest: EpochSeconds,
    /// Indexed by hour (hours since the epoch) modulo 24; hours that left the window are zero.
    hours: [Hour; HOURS as usize],
}

impl Window {
    pub(super) fn new(tags: Box<str>) -> Self {
        Window {
            tags,
            coords: [f64::NAN; 2],
            newest: 0,
            hours: [Hour::default(); HOURS as usize],
        }
    }

    pub(super) fn newest_hour(&self) -> u32 {
        self.newest / 3600
    }

    /// Moves the window forward so that it ends with `hour`, clearing the hours that left it.
    pub(super) fn advance_to(&mut self, time: EpochSeconds) {
        let (from, to) = (self.newest_hour(), time / 3600);
        if self.newest == 0 || to - from >= HOURS {
            self.hours = [Hour::default(); HOURS as usize];
        } else {
            for h in from + 1..=to {
                self.hours[(h % HOURS) as usize] = Hour::default();
            }
        }
        self.newest = time;
    }

    /// The hour slot of `time`, if it lies in the window (moving the window forward if needed).
    pub(super) fn slot(&mut self, time: EpochSeconds) -> Option<&mut Hour> {
        if time > self.newest {
            self.advance_to(time);
        }
        let hour = time / 3600;
        (hour + HOURS > self.newest_hour()).then(|| &mut self.hours[(hour % HOURS) as usize])
    }

    pub(super) fn mean(&self) -> Mean {
        let last = self.newest_hour();
        let mut pm10 = Acc::default();
        let mut pm25 = Acc::default();
        // Oldest hour first, so the sum is formed in the same order every time.
        for h in last + 1 - HOURS..=last {
            let hour = &self.hours[(h % HOURS) as usize];
            pm10.add(hour.pm10_sum, hour.pm10_n);
            pm25.add(hour.pm25_sum, hour.pm25_n);
        }
        Mean {
            pm10: pm10.result(),
            pm25: pm25.result(),
        }
    }
}

#[derive(Default)]
struct Acc {
    sum_of_hourly_means: f64,
    hours: u32,
}

impl Acc {
    fn add(&mut self, sum: u32, n: u16) {
        if n > 0 {
            self.sum_of_hourly_means += f64::from(sum) / f64::from(n);
            self.hours += 1;
        }
    }

    fn result(&self) -> Option<PollutantMean> {
        (self.hours > 0).then(|| PollutantMean {
            centi: (self.sum_of_hourly_means / f64::from(self.hours)).round() as u64,
            hours: self.hours,
        })
    }
}

/// The 24-hour mean of one pollutant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PollutantMean {
    /// Hundredths of µg/m³, rounded half up.
    pub(crate) centi: u64,
    /// Hours of the 24 that hold a reading.
    pub(crate) hours: u32,
}

impl PollutantMean {
    pub(crate) fn value(&self) -> f64 {
        self.centi as f64 / 100.0
    }

    pub(crate) fn has_index(&self) -> bool {
        self.hours >= MIN_HOURS
    }
}

/// A sensor's 24-hour means at its newest reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mean {
    pub(crate) pm10: Option<PollutantMean>,
    pub(crate) pm25: Option<PollutantMean>,
}

impl Mean {
    pub(crate) fn aqi_pm10(&self) -> Option<u8> {
        self.pm10
            .filter(PollutantMean::has_index)
            .and_then(|m| daqi::pm10(m.value()))
    }

    pub(crate) fn aqi_pm25(&self) -> Option<u8> {
        self.pm25
            .filter(PollutantMean::has_index)
            .and_then(|m| daqi::pm25(m.value()))
    }

    /// Hours covered by the better-covered pollutant.
    pub(crate) fn hours(&self) -> u32 {
        let h = |m: Option<PollutantMean>| m.map_or(0, |m| m.hours);
        h(self.pm10).max(h(self.pm25))
    }
}

/// Sums of one hour, in hundredths of µg/m³.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Hour {
    pm10_sum: u32,
    pm25_sum: u32,
    pm10_n: u16,
    pm25_n: u16,
}

impl Hour {
    pub(super) fn add(&mut self, pm10: Option<u32>, pm25: Option<u32>) {
        if let Some(x) = pm10 {
            add(&mut self.pm10_sum, &mut self.pm10_n, x, 1);
        }
        if let Some(x) = pm25 {
            add(&mut self.pm25_sum, &mut self.pm25_n, x, 1);
        }
    }

    /// Adds (sum, count) pairs of stored readings, as InfluxDB summed them.
    pub(super) fn add_sums(&mut self, pm10: Option<(u32, u16)>, pm25: Option<(u32, u16)>) {
        if let Some((s, n)) = pm10 {
            add(&mut self.pm10_sum, &mut self.pm10_n, s, n);
        }
        if let Some((s, n)) = pm25 {
            add(&mut self.pm25_sum, &mut self.pm25_n, s, n);
        }
    }
}

/// Adds `n` values summing to `x`, unless the hour is full (a sensor reporting more than
/// 65,535 times an hour, or sums beyond 42 million µg/m³, is broken; its surplus is dropped).
fn add(sum: &mut u32, count: &mut u16, x: u32, n: u16) {
    if let (Some(s), Some(c)) = (sum.checked_add(x), count.checked_add(n)) {
        *sum = s;
        *count = c;
    }
}
