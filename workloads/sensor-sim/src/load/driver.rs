//! The load generator's requests, made from inside the client endpoint's loop
//! ([`client::Driver`]): each slot of the window sends one reading at a time until the server
//! confirms it, with no task, channel or wake-up per request. A task per outstanding request
//! cost more CPU than the server spent on it, so the generator, not the server, set the ceiling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Latency, LoadPlan};
use crate::client::{self, ExchangeError, Request, Response, Step};
use crate::deliver::{self, Next, SensorClock, TEMPERATURE};
use crate::stats::Stats;

/// What every socket's driver shares.
pub(super) struct Run {
    pub plan: LoadPlan,
    pub stats: Arc<Stats>,
    /// The index of the next reading, over all sockets.
    pub next: AtomicU64,
    pub issued: Arc<AtomicU64>,
    pub latency: Arc<Mutex<Latency>>,
    pub started: Instant,
    pub send_until: Option<Instant>,
    pub stop: watch::Receiver<bool>,
}

/// One socket's window of readings.
pub(super) struct Window {
    run: Arc<Run>,
    slots: Vec<Slot>,
    /// Over DTLS all slots are one device, so one sensor: its readings take their times from one
    /// clock, strictly increasing, so that no two land on the same point.
    device_clock: SensorClock,
}

struct Slot {
    sensor: String,
    query: Vec<String>,
    clock: SensorClock,
    /// Whether its readings carry `ts=` (a reading sent again then lands on the same point, so a
    /// retransmission to a new coap-server pod is not stored twice). Not for a load device over
    /// DTLS without `--rate`: it sends the whole window as one sensor, thousands of readings a
    /// millisecond, whose millisecond times would run ahead of the clock; the server's own
    /// (unique, nanosecond) times are used instead.
    timestamped: bool,
    state: State,
}

enum State {
    Idle,
    /// Reading `i` waits for its time (`--rate`).
    Paced(u64),
    /// The reading's exchange is in flight.
    Sending(Reading),
    /// The reading waits to be sent again (5.03 Max-Age, a server error).
    Pausing(Reading),
}

/// A reading in delivery: what is needed to send it again, without keeping its request.
struct Reading {
    value: f64,
    taken_at_ms: i64,
    first_sent: Instant,
    deadline: Instant,
}

impl Slot {
    fn request(&self, r: &Reading) -> Request {
        let mut request = deliver::reading(TEMPERATURE, r.value, self.query.clone(), r.taken_at_ms);
        if !self.timestamped {
            request.query.retain(|q| !q.starts_with("ts="));
        }
        request
    }
}

impl Window {
    /// Slots `0..plan.window` of socket `socket`.
    pub fn new(run: Arc<Run>, socket: u32) -> Self {
        let slots = (0..run.plan.window)
            .map(|w| {
                let (sensor, query) = match &run.plan.devices {
                    // The server knows a device's place and name from its identity.
                    Some(devices) => {
                        let device = devices.get(socket as usize);
                        (
                            device.map_or_else(String::new, |d| d.identity.clone()),
                            Vec::new(),
                        )
                    }
                    None => {
                        // Fixed width: requests of one size go out together (`udp::Datagrams`).
                        let sensor = format!("load-{socket:03}-{w:05}");
                        let query = vec![
                            format!("place={}", run.plan.place),
                            format!("sensor={sensor}"),
                        ];
                        (sensor, query)
                    }
                };
                Slot {
                    query,
                    sensor,
                    clock: SensorClock::default(),
                    timestamped: run.plan.devices.is_none() || run.plan.rate.is_some(),
                    state: State::Idle,
                }
            })
            .collect();
        Window {
            run,
            slots,
            device_clock: SensorClock::default(),
        }
    }

    /// The next reading's index, or `None` once the run's bound or the stop signal is reached.
    fn take_index(&self) -> Option<u64> {
        let run = &self.run;
        let i = run.next.fetch_add(1, Ordering::Relaxed);
        let ended = run.plan.count.is_some_and(|n| i >= n)
            || run.send_until.is_some_and(|t| Instant::now() >= t)
            || *run.stop.borrow();
        (!ended).then_some(i)
    }

    /// Builds reading `i` of `slot` and sends it.
    fn send_reading(&mut self, slot: usize, i: u64) -> Step {
        let run = &self.run;
        run.issued.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let value = 20.0 + (i % 100) as f64 / 10.0;
        let deadline = run.send_until.map_or(now, |t| t.max(now)) + run.plan.drain;
        let s = &mut self.slots[slot];
        let taken_at_ms = match run.plan.devices {
            Some(_) => self.device_clock.now(),
            None => s.clock.now(),
        };
        let reading = Reading {
            value,
            taken_at_ms,
            first_sent: now,
            deadline,
        };
        let request = s.request(&reading);
        s.state = State::Sending(reading);
        Step::Send(request)
    }

    /// Judges the outcome of `slot`'s exchange: the reading is done with, or goes out again.
    fn settle(&mut self, slot: usize, outcome: Result<Response, ExchangeError>) -> Option<Step> {
        let stats = &self.run.stats;
        let s = &mut self.slots[slot];
        let State::Sending(reading) = std::mem::replace(&mut s.state, State::Idle) else {
            return None;
        };
        match deliver::next_step(outcome, stats) {
            Next::Stored => {
                let micros = (reading.first_sent.elapsed().as_micros() as u64).max(1);
                self.run
                    .latency
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(micros);
                None
            }
            Next::Refused(e) => {
                tracing::warn!(sensor = %s.sensor, error = %e, "reading not stored");
                None
            }
            Next::RetryAfter(pause) => {
                if let Some(e) = deliver::give_up(Some(reading.deadline), pause, stats) {
                    tracing::warn!(sensor = %s.sensor, error = %e, "reading not stored");
                    return None;
                }
                if pause.is_zero() {
                    let request = s.request(&reading);
                    s.state = State::Sending(reading);
                    return Some(Step::Send(request));
                }
                s.state = State::Pausing(reading);
                Some(Step::WakeAt(Instant::now() + pause))
            }
        }
    }
}

impl client::Driver for Window {
    fn slots(&self) -> usize {
        self.slots.len()
    }

    fn next(&mut self, slot: usize, ended: Option<Result<Response, ExchangeError>>) -> Step {
        if let Some(outcome) = ended {
            if let Some(step) = self.settle(slot, outcome) {
                return step;
            }
        } else {
            match std::mem::replace(&mut self.slots[slot].state, State::Idle) {
                State::Paced(i) => return self.send_reading(slot, i),
                State::Pausing(reading) => {
                    let s = &mut self.slots[slot];
                    let request = s.request(&reading);
                    s.state = State::Sending(reading);
                    return Step::Send(request);
                }
                // Only an idle slot (at the start) or a waiting one is woken.
                State::Idle | State::Sending(_) => {}
            }
        }
        let Some(i) = self.take_index() else {
            return Step::Done;
        };
        if let Some(rate) = self.run.plan.rate {
            // Reading i is due at i / rate seconds after the start.
            let due = self.run.started + Duration::from_secs_f64(i as f64 / rate);
            if due > Instant::now() {
                self.slots[slot].state = State::Paced(i);
                return Step::WakeAt(due);
            }
        }
        self.send_reading(slot, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Driver;
    use coap_lite::ResponseType;

    fn run(count: u64, window: u32, rate: Option<f64>) -> Arc<Run> {
        run_of(count, window, rate, None)
    }

    fn run_of(
        count: u64,
        window: u32,
        rate: Option<f64>,
        devices: Option<Vec<client::Credentials>>,
    ) -> Arc<Run> {
        let (_, stop) = watch::channel(false);
        Arc::new(Run {
            plan: LoadPlan {
                server: ([127, 0, 0, 1], 5683).into(),
                sockets: 1,
                window,
                rate,
                count: Some(count),
                duration: None,
                drain: Duration::from_secs(60),
                place: "bench".into(),
                json: false,
                devices,
            },
            stats: Arc::new(Stats::default()),
            next: AtomicU64::new(0),
            issued: Arc::new(AtomicU64::new(0)),
            latency: Arc::new(Mutex::new(Latency::default())),
            started: Instant::now(),
            send_until: None,
            stop,
        })
    }

    fn answer(code: ResponseType, max_age: Option<u32>) -> Option<Result<Response, ExchangeError>> {
        Some(Ok(Response {
            code,
            payload: Vec::new(),
            max_age,
        }))
    }

    fn sent(step: Step) -> Request {
        match step {
            Step::Send(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn each_slot_sends_one_reading_at_a_time_until_the_count_is_reached() {
        let run = run(3, 2, None);
        let mut w = Window::new(run.clone(), 7);
        let first = sent(w.next(0, None));
        assert!(first.query.contains(&"sensor=load-007-00000".to_string()));
        sent(w.next(1, None));
        // Slot 0's reading is stored: it takes the third.
        sent(w.next(0, answer(ResponseType::Changed, None)));
        assert!(matches!(
            w.next(1, answer(ResponseType::Changed, None)),
            Step::Done
        ));
        assert!(matches!(
            w.next(0, answer(ResponseType::Changed, None)),
            Step::Done
        ));
        assert_eq!(run.issued.load(Ordering::Relaxed), 3);
        assert_eq!(run.stats.acked.get(), 3);
        assert_eq!(run.latency.lock().unwrap().total.len(), 3);
    }

    #[test]
    fn over_dtls_with_a_rate_the_windows_readings_take_one_clock() {
        let device = client::Credentials {
            identity: "fault-1".into(),
            key: client::KeySource::Given("0123456789abcdef".into()),
        };
        let dtls = run_of(3, 3, Some(1e9), Some(vec![device]));
        let mut w = Window::new(dtls, 0);
        let times: Vec<i64> = (0..3)
            .map(|slot| {
                let request = sent(w.next(slot, None));
                assert_eq!(request.query.len(), 1, "{:?}", request.query);
                request.query[0]
                    .strip_prefix("ts=")
                    .expect("ts=")
                    .parse()
                    .expect("a number")
            })
            .collect();
        assert!(times[0] < times[1] && times[1] < times[2], "{times:?}");
    }

    #[test]
    fn over_dtls_load_readings_carry_no_query_the_server_times_them() {
        let device = client::Credentials {
            identity: "sim-1".into(),
            key: client::KeySource::Given("0123456789abcdef".into()),
        };
        let dtls = run_of(1, 1, None, Some(vec![device]));
        let request = sent(Window::new(dtls, 0).next(0, None));
        assert!(request.query.is_empty(), "{:?}", request.query);
    }

    #[test]
    fn a_busy_server_gets_the_same_reading_again_after_max_age() {
        let run = run(1, 1, None);
        let mut w = Window::new(run.clone(), 0);
        let first = sent(w.next(0, None));
        let before = Instant::now();
        match w.next(0, answer(ResponseType::ServiceUnavailable, Some(2))) {
            Step::WakeAt(at) => assert!(at >= before + Duration::from_secs(2)),
            other => panic!("expected a pause, got {other:?}"),
        }
        // The same reading, with its time: the server stores it once.
        let again = sent(w.next(0, None));
        assert_eq!((again.query, again.payload), (first.query, first.payload));
        // A lost exchange goes out again at once.
        sent(w.next(0, Some(Err(ExchangeError::Timeout(4)))));
        assert!(matches!(
            w.next(0, answer(ResponseType::Created, None)),
            Step::Done
        ));
        assert_eq!(run.issued.load(Ordering::Relaxed), 1);
        assert_eq!(
            (run.stats.unavailable.get(), run.stats.timeouts.get()),
            (1, 1)
        );
        assert_eq!(run.stats.acked.get(), 1);
    }

    #[test]
    fn a_refused_reading_is_counted_as_failed_and_the_slot_goes_on() {
        let run = run(2, 1, None);
        let mut w = Window::new(run.clone(), 0);
        sent(w.next(0, None));
        sent(w.next(0, answer(ResponseType::BadRequest, None)));
        assert_eq!(run.stats.failed.get(), 1);
    }

    #[test]
    fn with_a_rate_a_reading_waits_for_its_time() {
        // 10 a second: reading 1 is due 100 ms after the start.
        let run = run(2, 2, Some(10.0));
        let mut w = Window::new(run.clone(), 0);
        sent(w.next(0, None));
        match w.next(1, None) {
            Step::WakeAt(at) => assert!(at >= run.started + Duration::from_millis(100)),
            other => panic!("expected a wait, got {other:?}"),
        }
        sent(w.next(1, None));
        assert_eq!(run.issued.load(Ordering::Relaxed), 2);
    }
}
