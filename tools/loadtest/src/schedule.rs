//! When each virtual user starts: the phases turned into a list of offsets from the start of
//! the run (pure). Users of one phase arrive evenly spaced, `1 / rate` apart, as Artillery's
//! constant arrival rate does.

use std::time::Duration;

use super::profile::Phase;

/// Start offsets of every user, in order, and the phase (index) each belongs to.
pub fn arrivals(phases: &[Phase]) -> Vec<Arrival> {
    let mut out = Vec::new();
    let mut phase_start = Duration::ZERO;
    for (index, phase) in phases.iter().enumerate() {
        if let Phase::Arrivals { duration, rate, .. } = phase {
            // Users whose start falls inside the phase: t = i / rate < duration.
            let count = (duration.as_secs_f64() * rate - 1e-9).ceil().max(0.0) as u64;
            out.extend((0..count).map(|i| Arrival {
                at: phase_start + Duration::from_secs_f64(i as f64 / rate),
                phase: index,
            }));
        }
        phase_start += phase.duration();
    }
    out
}

/// How long the phases last in all (the last users may still be busy after it).
pub fn length(phases: &[Phase]) -> Duration {
    phases.iter().map(Phase::duration).sum()
}

/// The phase running at `elapsed`, if any (for the progress line).
pub fn phase_at(phases: &[Phase], elapsed: Duration) -> Option<(usize, &Phase)> {
    let mut end = Duration::ZERO;
    phases.iter().enumerate().find(|(_, p)| {
        end += p.duration();
        elapsed < end
    })
}

/// One user's arrival.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// From the start of the run.
    pub at: Duration,
    /// Index of its phase in the profile.
    pub phase: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

    fn users(duration: f64, rate: f64) -> Phase {
        Phase::Arrivals {
            name: None,
            duration: Duration::from_secs_f64(duration),
            rate,
        }
    }

    #[test]
    fn reference_profile_starts_550_users_over_600_seconds() {
        let phases = Profile::reference().grafana.phases;
        let a = arrivals(&phases);
        // 1/s for 50 + 60 + 60 s, 2/s for 50 + 60 + 80 s.
        assert_eq!(a.len(), 170 + 380);
        assert_eq!(length(&phases), Duration::from_secs(600));
        // Stage 4 (phase index 6) starts after 50+30+60+60+60+30 = 290 s, two users a second.
        let stage4: Vec<_> = a.iter().filter(|x| x.phase == 6).collect();
        assert_eq!(stage4.len(), 100);
        assert_eq!(stage4[0].at, Duration::from_secs(290));
        assert_eq!(stage4[1].at, Duration::from_millis(290_500));
    }

    #[test]
    fn pauses_add_no_users_but_shift_the_next_phase() {
        let a = arrivals(&[
            users(2.0, 1.0),
            Phase::Pause(Duration::from_secs(3)),
            users(1.0, 2.0),
        ]);
        let at: Vec<f64> = a.iter().map(|x| x.at.as_secs_f64()).collect();
        assert_eq!(at, vec![0.0, 1.0, 5.0, 5.5]);
    }

    #[test]
    fn fractional_rates_round_to_the_users_that_fit() {
        // 0.4 users/s for 3 s: at 0 s and 2.5 s.
        assert_eq!(arrivals(&[users(3.0, 0.4)]).len(), 2);
        assert_eq!(arrivals(&[users(0.5, 1.0)]).len(), 1);
    }

    #[test]
    fn phase_at_finds_the_running_phase() {
        let phases = [users(2.0, 1.0), Phase::Pause(Duration::from_secs(3))];
        assert_eq!(
            phase_at(&phases, Duration::from_secs(1)).map(|p| p.0),
            Some(0)
        );
        assert_eq!(
            phase_at(&phases, Duration::from_secs(2)).map(|p| p.0),
            Some(1)
        );
        assert!(phase_at(&phases, Duration::from_secs(5)).is_none());
    }
}
