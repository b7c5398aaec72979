//! Plausible DHT22 readings: a slow random walk pulled back towards a per-sensor baseline, so
//! charts look like a room rather than noise. Values are rounded to the sensor's 0.1 resolution.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub struct Dht {
    rng: SmallRng,
    temperature: f64,
    humidity: f64,
    base_temperature: f64,
    base_humidity: f64,
}

impl Dht {
    pub fn new(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let base_temperature = rng.random_range(19.0..25.0);
        let base_humidity = rng.random_range(35.0..55.0);
        Dht {
            rng,
            temperature: base_temperature,
            humidity: base_humidity,
            base_temperature,
            base_humidity,
        }
    }

    /// The next (temperature °C, relative humidity %) pair.
    pub fn next(&mut self) -> (f64, f64) {
        self.temperature +=
            0.1 * (self.base_temperature - self.temperature) + self.rng.random_range(-0.15..0.15);
        self.humidity +=
            0.1 * (self.base_humidity - self.humidity) + self.rng.random_range(-0.5..0.5);
        self.humidity = self.humidity.clamp(0.0, 100.0);
        (round1(self.temperature), round1(self.humidity))
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_drift_slowly_and_stay_plausible() {
        let mut dht = Dht::new(7);
        let (mut t0, mut h0) = dht.next();
        for _ in 0..10_000 {
            let (t, h) = dht.next();
            assert!(
                (t - t0).abs() <= 1.0 && (h - h0).abs() <= 3.0,
                "jump {t0}->{t} {h0}->{h}"
            );
            assert!((10.0..=35.0).contains(&t), "temperature {t}");
            assert!((0.0..=100.0).contains(&h), "humidity {h}");
            assert_eq!((t * 10.0).round() / 10.0, t);
            (t0, h0) = (t, h);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_readings() {
        let (mut a, mut b) = (Dht::new(1), Dht::new(1));
        for _ in 0..100 {
            assert_eq!(a.next(), b.next());
        }
    }
}
