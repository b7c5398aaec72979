//! The load generator's requests, made from inside the client endpoint's loop
//! ([`client::Driver`]): each slot of the window sends one reading at a time until the server
//! confirms it, with no task, channel or wake-up per request. A task per outstanding request
//! cost more CPU than the server spent on it, so the generator, not the server, set the ceiling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Assignment, Latency, LoadPlan};
use crate::client::{self, ExchangeError, Request, Response, Step};
use crate::deliver::{self, Next, SensorClock, TEMPERATURE};
use crate::stats::Stats;

/// What every socket's driver shares.
pub(super) struct Run {
    pub plan: LoadPlan,
    pub stats: Arc<Stats>,
    /// The index of the next reading, over all sockets ([`Assignment::FirstFree`]).
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
    /// The index of its next reading ([`Assignment::OwnSchedule`]).
    own_next: u64,
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
    /// Slots `0..window` of socket `socket`.
    pub fn new(run: Arc<Run>, socket: u32) -> Self {
        let window = run.plan.shape.window;
        let slots = (0..window)
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
                    timestamped: run.plan.devices.is_none() || run.plan.shape.rate.is_some(),
                    own_next: u64::from(socket) * u64::from(window) + u64::from(w),
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

    /// The index of `slot`'s next reading, or `None` once the run's bound or the stop signal
    /// is reached.
    fn take_index(&mut self, slot: usize) -> Option<u64> {
        let run = &self.run;
        let i = match run.plan.shape.assignment {
            Assignment::FirstFree => run.next.fetch_add(1, Ordering::Relaxed),
            Assignment::OwnSchedule => {
                let s = &mut self.slots[slot];
                let i = s.own_next;
                s.own_next += run.plan.shape.slots();
                i
            }
        };
        let ended = run.plan.count.is_some_and(|n| i >= n)
            || run
                .send_until
                .is_some_and(|t| Instant::now() >= t || self.due(i).is_some_and(|d| d >= t))
            || *run.stop.borrow();
        (!ended).then_some(i)
    }

    /// When reading `i` is due, if the readings are paced.
    fn due(&self, i: u64) -> Option<Instant> {
        let rate = self.run.plan.shape.rate?;
        Some(self.run.started + Duration::from_secs_f64(i as f64 / rate))
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
        let Some(i) = self.take_index(slot) else {
            return Step::Done;
        };
        // A reading past due (a slow answer) goes at once: the rate holds while it can.
        if let Some(due) = self.due(i).filter(|d| *d > Instant::now()) {
            self.slots[slot].state = State::Paced(i);
            return Step::WakeAt(due);
        }
        self.send_reading(slot, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Driver;
    use crate::load::Shape;
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
        let shape = Shape {
            sockets: 1,
            window,
            rate,
            assignment: Assignment::FirstFree,
            ports: client::SourcePort::Kept,
        };
        run_shaped(shape, Some(count), None, devices)
    }

    fn run_shaped(
        shape: Shape,
        count: Option<u64>,
        duration: Option<Duration>,
        devices: Option<Vec<client::Credentials>>,
    ) -> Arc<Run> {
        let (_, stop) = watch::channel(false);
        let started = Instant::now();
        Arc::new(Run {
            plan: LoadPlan {
                server: ([127, 0, 0, 1], 5683).into(),
                shape,
                count,
                duration,
                drain: Duration::from_secs(60),
                place: "bench".into(),
                json: false,
                devices,
            },
            stats: Arc::new(Stats::default()),
            next: AtomicU64::new(0),
            issued: Arc::new(AtomicU64::new(0)),
            latency: Arc::new(Mutex::new(Latency::default())),
            started,
            send_until: duration.map(|d| started + d),
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

    /// The time a slot is told to wake at.
    fn woken_at(step: Step) -> Instant {
        match step {
            Step::WakeAt(at) => at,
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    #[test]
    fn on_its_own_schedule_device_j_of_n_starts_at_j_over_n_of_an_interval() {
        // Four devices, one reading a second each: device 2 is due at 0.5 s, then 1.5 s.
        let shape = Shape::of(8, Some(4), None, None, Some(1.0), false).unwrap();
        let run = run_shaped(shape, None, Some(Duration::from_secs(2)), None);
        let mut device = Window::new(run.clone(), 2);
        let first = woken_at(device.next(0, None));
        assert_eq!(first, run.started + Duration::from_millis(500));
        sent(device.next(0, None));
        let second = woken_at(device.next(0, answer(ResponseType::Changed, None)));
        assert_eq!(second, run.started + Duration::from_millis(1500));
        sent(device.next(0, None));
        // Its third would be due at 2.5 s, past the sending phase.
        assert!(matches!(
            device.next(0, answer(ResponseType::Changed, None)),
            Step::Done
        ));
        assert_eq!(run.issued.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn on_own_schedules_a_count_is_shared_evenly_however_fast_each_device_is() {
        // 3 devices, 7 readings: devices 0 sends readings 0, 3 and 6; the others two each,
        // even when device 0 is answered long before the others are asked.
        let shape = Shape::of(8, Some(3), None, None, Some(0.001), false).unwrap();
        let run = run_shaped(shape, Some(7), None, None);
        std::thread::sleep(Duration::from_millis(5));
        let mut windows: Vec<Window> = (0..3).map(|d| Window::new(run.clone(), d)).collect();
        let mut sent_by = [0; 3];
        for (d, w) in windows.iter_mut().enumerate() {
            let mut step = w.next(0, None);
            while let Step::Send(_) = step {
                sent_by[d] += 1;
                step = w.next(0, answer(ResponseType::Changed, None));
            }
            assert!(matches!(step, Step::Done), "{step:?}");
        }
        assert_eq!(sent_by, [3, 2, 2]);
    }
}
