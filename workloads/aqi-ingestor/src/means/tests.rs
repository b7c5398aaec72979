//! The 24-hour windows: the capture rule, sliding, rebuilding from stored hours, order.

use super::*;

/// 2024-01-15 00:00:00 UTC.
const DAY: EpochSeconds = 1_705_276_800;

fn reading(sensor: u64, time: EpochSeconds, pm10: f64, pm25: f64) -> Reading {
    Reading {
        sensor,
        time,
        pm10: centi(pm10),
        pm25: centi(pm25),
        coords: Some((51.5, -0.12)),
        tags: format!(",sensor_id={sensor},country=GB").into(),
    }
}

fn line(w: &Windows, sensor: u64) -> String {
    let mut out = String::new();
    w.append_line(&mut out, sensor).expect("a mean");
    out
}

#[test]
fn the_mean_is_the_mean_of_hourly_means() {
    let mut w = Windows::new();
    // Hour 0: 10 and 20 (mean 15); hour 1: 40 (mean 40). Mean of hourly means 27.5, not
    // the reading mean 23.33.
    w.add(&reading(1, DAY + 60, 10.0, 1.0));
    w.add(&reading(1, DAY + 120, 20.0, 2.0));
    w.add(&reading(1, DAY + 3600 + 60, 40.0, 4.0));
    let (t, m) = w.mean(1).expect("mean");
    assert_eq!(t, DAY + 3660);
    assert_eq!(
        m.pm10,
        Some(PollutantMean {
            centi: 2750,
            hours: 2
        })
    );
    assert_eq!(
        m.pm25,
        Some(PollutantMean {
            centi: 275,
            hours: 2
        })
    );
    assert_eq!(m.aqi_pm10(), None, "2 of 24 hours: no index");
}

#[test]
fn eighteen_hours_give_an_index_seventeen_do_not() {
    let mut w = Windows::new();
    for h in 0..17 {
        w.add(&reading(1, DAY + h * 3600, 20.0, 12.0));
    }
    let (_, m) = w.mean(1).expect("mean");
    assert_eq!(m.hours(), 17);
    assert_eq!((m.aqi_pm10(), m.aqi_pm25()), (None, None));
    assert_eq!(
        line(&w, 1),
        format!(
            "air_quality,sensor_id=1,country=GB P1=20.00,P2=12.00,coverage=0.7083,latitude=51.5,longitude=-0.12,origin=\"computed\" {}\n",
            timestamp::to_nanos(DAY + 16 * 3600)
        )
    );
    w.add(&reading(1, DAY + 17 * 3600, 20.0, 12.0));
    let (_, m) = w.mean(1).expect("mean");
    assert_eq!((m.aqi_pm10(), m.aqi_pm25()), (Some(2), Some(2)));
    assert!(
        line(&w, 1).contains(" P1=20.00,P2=12.00,aqi_pm10=2i,aqi_pm25=2i,aqi=2i,coverage=0.7500,")
    );
}

#[test]
fn each_pollutant_needs_its_own_coverage() {
    let mut w = Windows::new();
    for h in 0..20 {
        let pm25 = if h < 10 { centi(30.0) } else { None };
        w.add(&Reading {
            pm25,
            ..reading(1, DAY + h * 3600, 60.0, 0.0)
        });
    }
    let (_, m) = w.mean(1).expect("mean");
    assert_eq!(m.aqi_pm10(), Some(5), "PM10 60 in 20 hours");
    assert_eq!(m.aqi_pm25(), None, "PM2.5 in 10 hours only");
    assert!(line(&w, 1).contains("aqi_pm10=5i,aqi=5i,coverage=0.8333"));
}

#[test]
fn the_window_slides_and_old_hours_drop_out() {
    let mut w = Windows::new();
    w.add(&reading(1, DAY, 100.0, 100.0));
    for h in 1..=24 {
        w.add(&reading(1, DAY + h * 3600, 10.0, 10.0));
    }
    // Hour 0 (100) has left the window ending with hour 24.
    let (_, m) = w.mean(1).expect("mean");
    assert_eq!(m.pm10.map(|p| (p.centi, p.hours)), Some((1000, 24)));
    // A reading older than the window is ignored.
    w.add(&reading(1, DAY + 30, 500.0, 500.0));
    assert_eq!(w.mean(1).expect("mean").1, m);
    // A gap longer than a day empties it.
    w.add(&reading(1, DAY + 60 * 3600, 7.0, 7.0));
    let (_, m) = w.mean(1).expect("mean");
    assert_eq!(m.pm10.map(|p| (p.centi, p.hours)), Some((700, 1)));
}

#[test]
fn arrival_order_does_not_change_the_result() {
    let times: Vec<EpochSeconds> = (0..288).map(|i| DAY + i * 300 + (i * 37) % 290).collect();
    let value = |i: usize| 5.0 + (i * 7919 % 1000) as f64 / 100.0;
    let mut forward = Windows::new();
    let mut backward = Windows::new();
    for (i, &t) in times.iter().enumerate() {
        forward.add(&reading(1, t, value(i), value(i) / 2.0));
    }
    for (i, &t) in times.iter().enumerate().rev() {
        backward.add(&reading(1, t, value(i), value(i) / 2.0));
    }
    assert_eq!(line(&forward, 1), line(&backward, 1));
}

#[test]
fn stored_hours_rebuild_the_same_window() {
    let mut live = Windows::new();
    let mut rebuilt = Windows::new();
    let newest = DAY + 23 * 3600 + 1500;
    for h in 0..24u32 {
        let (mut s10, mut s25, mut n) = (0, 0, 0u16);
        for k in 0..12u32 {
            let t = DAY + h * 3600 + k * 300;
            if t > newest {
                break;
            }
            let r = reading(1, t, 10.0 + f64::from(k), 3.25);
            s10 += r.pm10.expect("pm10");
            s25 += r.pm25.expect("pm25");
            n += 1;
            live.add(&r);
        }
        rebuilt.add_stored_hour(&StoredHour {
            sensor: 1,
            tags: ",sensor_id=1,country=GB",
            coords: Some((51.5, -0.12)),
            newest,
            hour: DAY / 3600 + h,
            pm10: Some((s10, n)),
            pm25: Some((s25, n)),
        });
    }
    assert_eq!(live.mean(1), rebuilt.mean(1));
    assert_eq!(line(&live, 1), line(&rebuilt, 1));
}

#[test]
fn windows_are_complete_only_from_the_rebuilt_hour_on() {
    let mut w = Windows::new();
    w.add(&reading(1, DAY + 10 * 3600, 1.0, 1.0));
    w.add(&reading(2, DAY + 40 * 3600, 1.0, 1.0));
    w.set_complete_from_hour(DAY / 3600 + 17);
    assert_eq!(w.complete(), [(2, DAY + 40 * 3600)]);
    w.set_complete_from_hour(0);
    assert_eq!(w.complete().len(), 2);
}

#[test]
fn sensors_older_than_a_day_are_forgotten() {
    let mut w = Windows::new();
    w.add(&reading(1, DAY, 1.0, 1.0));
    w.add(&reading(2, DAY + 23 * 3600, 1.0, 1.0));
    w.evict();
    assert_eq!(w.len(), 2);
    w.add(&reading(2, DAY + 24 * 3600, 1.0, 1.0));
    w.evict();
    assert_eq!(w.len(), 1);
    assert!(w.mean(1).is_none());
}

#[test]
fn coverage_is_written_in_ten_thousandths() {
    assert_eq!(coverage_ten_thousandths(18), 7500);
    assert_eq!(coverage_ten_thousandths(19), 7917);
    assert_eq!(coverage_ten_thousandths(1), 417);
    assert_eq!(coverage_ten_thousandths(24), 10_000);
}

#[test]
fn the_index_is_that_of_the_written_mean() {
    // Hourly means 50.49 and 50.50 ... mean 50.495 → written 50.50 → rounds to 51 → band 4.
    let mut w = Windows::new();
    for h in 0..24 {
        let x = if h % 2 == 0 { 50.49 } else { 50.50 };
        w.add(&reading(1, DAY + h * 3600, x, 1.0));
    }
    let (_, m) = w.mean(1).expect("mean");
    assert_eq!(m.pm10.map(|p| p.centi), Some(5050));
    assert_eq!(m.aqi_pm10(), Some(4));
}
