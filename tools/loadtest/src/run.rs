//! One load test from start to end: resolve the monitor and the profile, give the CoAP load its
//! devices, start the recorder and the load, stop both, remove what was created, draw the plot,
//! judge the thresholds.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::Api;
use rand::Rng;
use tokio::sync::watch;

use super::coap_job::CoapLoad;
use super::devices::{self, DevicesError, LoadDevices};
use super::meter::{self, LoadMeter};
use super::profile::{self, Profile};
use super::recorder::{self, Bounds};
use super::{
    LoadtestArgs, LoadtestError, Report, Target, coap_job, http_load, plan, plot, progress,
    sampler, schedule,
};
use iot_operator::constants::{COAPS_PORT, GRAFANA_PORT};
use iot_operator::controller::dereference::{Dereferenced, dereference};
use iot_operator::controller::validate::{InvalidSpec, ValidatedMonitor, validate};
use iot_operator::crd::{IotMonitor, SchedulingSpec};

/// Runs one load test. `stop` turning true is Ctrl-C: the load stops, what the command
/// created is removed, and the timeline and plot are still written.
pub async fn run(
    client: kube::Client,
    args: &LoadtestArgs,
    stop: watch::Receiver<bool>,
) -> Result<Report, LoadtestError> {
    let Some(name) = args.monitor.clone() else {
        return Err(LoadtestError::NoMonitor);
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let monitors: Api<IotMonitor> = Api::namespaced(client.clone(), &namespace);
    let monitor = monitors
        .get(&name)
        .await
        .map_err(|source| LoadtestError::Monitor {
            name: name.clone(),
            namespace: namespace.clone(),
            source,
        })?;
    let refs = dereference(&client, &monitor, None, false)
        .await
        .map_err(|e| LoadtestError::Dereference(name.clone(), e))?;
    let model = validate(&monitor, &refs).map_err(|e| LoadtestError::Invalid(name.clone(), e))?;
    let profile = match &args.profile {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| LoadtestError::ProfileFile(path.clone(), e))?;
            Profile::parse(&text)
                .map_err(|e| LoadtestError::Profile(path.display().to_string(), e))?
        }
        None => Profile::reference(),
    };
    let seconds = |s: f64| {
        (0.0..=86_400.0)
            .contains(&s)
            .then(|| Duration::from_secs_f64(s))
    };
    let duration = match args.duration {
        Some(s) if s > 0.0 => Some(seconds(s).ok_or(LoadtestError::Bounds)?),
        Some(_) => return Err(LoadtestError::Bounds),
        None => None,
    };
    let settle = seconds(args.settle).ok_or(LoadtestError::Bounds)?;
    let plan = plan(args.target, &profile, duration, settle);
    std::fs::create_dir_all(&args.out).map_err(|e| LoadtestError::Output(args.out.clone(), e))?;
    let csv = args.out.join("timeline.csv");
    let (png, svg) = (args.out.join("timeline.png"), args.out.join("timeline.svg"));
    let job = match args.target {
        Target::Coap => Some(job_params(
            args,
            &namespace,
            &monitor,
            &refs,
            &model,
            &profile,
            plan.load_for,
        )?),
        Target::Grafana | Target::None => None,
    };

    // Before the recording starts: the time the operator takes to key the devices is no part
    // of the timeline.
    let load_devices = job.as_ref().and_then(|job| match &job.load {
        CoapLoad::Devices { devices, .. } => Some(devices.clone()),
        CoapLoad::Plaintext => None,
    });
    if let Some(d) = &load_devices {
        devices::add(&client, &namespace, d).await?;
        if let Err(e) = devices::wait_for_keys(&client, &namespace, d, stop.clone()).await {
            remove_devices(&client, &namespace, d).await;
            return Err(match e {
                DevicesError::Interrupted => LoadtestError::Interrupted,
                e => e.into(),
            });
        }
    }

    let component = args.plot_component().as_label();
    let started = Instant::now();
    let meter = Arc::new(LoadMeter::default());
    let sampler = sampler::Sampler::start(client.clone(), &namespace, &name).await;
    let (load_stop_tx, load_stop) = watch::channel(false);
    let (done_tx, done) = watch::channel(None::<Instant>);
    let mut job_name = None;
    let load_deadline = started + plan.load_for;
    let load = match (job, args.target) {
        (Some(params), _) => {
            job_name = Some(params.name.clone());
            let (client, meter, stop) = (client.clone(), meter.clone(), load_stop.clone());
            let deadline = started + plan.record_for;
            tokio::spawn(async move {
                let outcome = coap_job::run(client, &params, meter, stop, deadline).await;
                let _ = done_tx.send(Some(Instant::now()));
                outcome.map(|o| format!("{o:?}")).map_err(|e| e.to_string())
            })
        }
        (None, Target::Grafana) => {
            let load = http_load::HttpLoad {
                base_url: grafana_url(args, &model, &namespace),
                paths: profile.grafana.paths.clone(),
                loops: profile.grafana.loops,
                arrivals: schedule::arrivals(&profile.grafana.phases),
                deadline: load_deadline,
                request_timeout: Duration::from_secs(30),
            };
            tracing::info!(url = %load.base_url, users = load.arrivals.len(), "HTTP load on Grafana");
            let (meter, stop) = (meter.clone(), load_stop.clone());
            tokio::spawn(async move {
                let outcome = http_load::run(load, meter, stop).await;
                let _ = done_tx.send(Some(Instant::now()));
                Ok(format!("{outcome:?}"))
            })
        }
        // A CoAP target always has its Job.
        (None, Target::None | Target::Coap) => tokio::spawn(async move {
            drop(done_tx);
            Ok("no load (recording only)".to_owned())
        }),
    };
    // Ctrl-C reaches the load too.
    let forward = {
        let (mut stop, load_stop_tx) = (stop.clone(), load_stop_tx.clone());
        tokio::spawn(async move {
            if stop.wait_for(|s| *s).await.is_ok() {
                let _ = load_stop_tx.send(true);
            }
        })
    };

    let planned = plan.record_for.as_secs_f64();
    let phases = profile.grafana.phases.clone();
    let mut printer = progress_printer();
    let recorded = recorder::record(
        &sampler,
        meter.clone(),
        &csv,
        Bounds {
            deadline: started + plan.record_for,
            settle,
            scaled_in: args.until_scaled_in.then(|| recorder::ScaledIn {
                grafana: component == "grafana",
                min_replicas: replicas_min(&model, component),
            }),
        },
        done,
        stop,
        |sample| {
            let phase = (args.target == Target::Grafana)
                .then(|| schedule::phase_at(&phases, Duration::from_secs_f64(sample.elapsed_s)))
                .flatten()
                .map(|(i, p)| match p {
                    profile::Phase::Arrivals { name: Some(n), .. } => n.clone(),
                    profile::Phase::Arrivals { .. } => format!("phase {}", i + 1),
                    profile::Phase::Pause(_) => "pause".to_owned(),
                });
            printer(&progress::line(
                sample,
                planned,
                component,
                phase.as_deref(),
            ));
        },
    )
    .await;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }

    // Stop the load, then remove what we created, whatever happened above.
    let _ = load_stop_tx.send(true);
    forward.abort();
    let load_result = match tokio::time::timeout(Duration::from_secs(30), load).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("the load task failed: {e}")),
        Err(_) => Err("the load did not stop within 30 s".to_owned()),
    };
    if let Some(job) = &job_name {
        match tokio::time::timeout(
            Duration::from_secs(30),
            coap_job::delete(client.clone(), &namespace, job),
        )
        .await
        {
            Ok(Ok(())) => tracing::info!(%job, "load Job deleted"),
            Ok(Err(e)) => {
                tracing::warn!(%job, error = %e, "cannot delete the load Job; it ends by itself (activeDeadlineSeconds, ttlSecondsAfterFinished)")
            }
            Err(_) => tracing::warn!(%job, "deleting the load Job timed out; it ends by itself"),
        }
    }
    if let Some(d) = &load_devices {
        remove_devices(&client, &namespace, d).await;
    }
    let max_replicas = sampler.hpa(component).map(|h| h.spec.max_replicas);
    sampler.stop();
    let (rows, ended) = recorded.map_err(|e| LoadtestError::Output(csv.clone(), e))?;

    let spec = plot::PlotSpec {
        title: format!(
            "iot-loadtest: {} / {component} ({} load)",
            name,
            args.target.as_str()
        ),
        component: component.to_owned(),
        scale_out_pct: model.autoscaling.map(|p| f64::from(p.target_cpu_percent)),
        scale_in_pct: model
            .autoscaling
            .map(|_| f64::from(monitor.spec.autoscaling.scale_in.cpu_percent)),
        max_replicas: max_replicas.or_else(|| replicas_max(&model, component)),
    };
    plot::render(
        &plot::PlotData::from_rows(&rows, component),
        &spec,
        &png,
        &svg,
    )?;

    let thresholds = match args.target {
        Target::Coap => profile.coap.thresholds,
        Target::Grafana => profile.grafana.thresholds,
        Target::None => profile::Thresholds::default(),
    };
    let total = meter.total();
    let verdicts = meter::judge(&thresholds, total.as_ref());
    let load_error = load_result.err();
    if let Some(e) = &load_error {
        tracing::error!("{e}");
    }
    if args.target != Target::None {
        print!(
            "{}",
            progress::summary(meter.counts(), total.as_ref(), &verdicts)
        );
    }
    Ok(Report {
        ended,
        verdicts,
        load_error,
        csv,
        png,
        svg,
        rows: rows.len(),
    })
}

/// Takes the load's devices out of the monitor again; a failure is said with what to do, and
/// does not hide the run's result.
async fn remove_devices(client: &kube::Client, namespace: &str, d: &LoadDevices) {
    let removed = tokio::time::timeout(
        Duration::from_secs(30),
        devices::remove(client, namespace, d),
    )
    .await;
    let error = match removed {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 30 s".to_owned(),
    };
    tracing::warn!(monitor = %d.monitor, %error, field_manager = devices::FIELD_MANAGER, "the load devices are still in spec.coap.devices; the next run removes them at its end, or apply the monitor with no fields under that field manager (docs/loadtest.md)");
}

/// The progress line: redrawn in place at a terminal, every 10 s into a log otherwise.
fn progress_printer() -> impl FnMut(&str) {
    let terminal = std::io::stderr().is_terminal();
    let mut count = 0u64;
    move |line| {
        if terminal {
            eprint!("\r\x1b[2K{line}");
        } else if count.is_multiple_of(10) {
            eprintln!("{line}");
        }
        count += 1;
    }
}

/// The CoAP load Job: a fleet of devices over DTLS, or with `--plaintext` the profile's sockets
/// to the plaintext port. Pure but for the Job's random name.
fn job_params(
    args: &LoadtestArgs,
    namespace: &str,
    monitor: &IotMonitor,
    refs: &Dereferenced,
    model: &ValidatedMonitor,
    profile: &Profile,
    send_for: Duration,
) -> Result<coap_job::JobParams, LoadtestError> {
    let name = monitor.name_any();
    let sim = load_simulator(monitor, refs).map_err(|e| LoadtestError::Invalid(name.clone(), e))?;
    let service = &model.names.coap_server;
    let (server, load) = match args.plaintext {
        true if !model.coap.plaintext => return Err(LoadtestError::PlaintextClosed(name)),
        true => (
            format!("{service}:{}", model.coap.port),
            CoapLoad::Plaintext,
        ),
        false => (
            format!("{service}:{COAPS_PORT}"),
            CoapLoad::Devices {
                devices: LoadDevices::new(&name, &model.names.devices, args.devices),
                new_port_per_reading: args.new_port_per_reading,
            },
        ),
    };
    Ok(coap_job::JobParams {
        name: format!("{name}-loadtest-{}", suffix()),
        namespace: namespace.to_owned(),
        instance: name,
        image: args.image.clone().unwrap_or(sim.image),
        server,
        load,
        profile: profile.coap.clone(),
        send_for,
        scheduling: sim.scheduling,
    })
}

/// The sensor-sim image and scheduling the monitor's simulator would have (enabled or not),
/// resolved as the operator resolves them.
fn load_simulator(monitor: &IotMonitor, refs: &Dereferenced) -> Result<LoadSim, InvalidSpec> {
    let mut with_simulator = monitor.clone();
    with_simulator.spec.simulator.enabled = true;
    // Devices may be named as the simulator's sensors while it is off; its image and
    // scheduling do not depend on them.
    with_simulator.spec.coap.devices.clear();
    // With the simulator enabled, a valid spec always resolves one; the fallback is this
    // operator version's default image, scheduled anywhere.
    Ok(validate(&with_simulator, refs)?.simulator.map_or_else(
        || {
            use iot_operator::constants::{IMAGE_REPOSITORY, SENSOR_SIM_IMAGE, WORKLOAD_VERSION};
            LoadSim {
                image: format!("{IMAGE_REPOSITORY}/{SENSOR_SIM_IMAGE}:{WORKLOAD_VERSION}"),
                scheduling: SchedulingSpec::default(),
            }
        },
        |s| LoadSim {
            image: s.image,
            scheduling: s.scheduling,
        },
    ))
}

struct LoadSim {
    image: String,
    scheduling: SchedulingSpec,
}

fn grafana_url(args: &LoadtestArgs, model: &ValidatedMonitor, namespace: &str) -> String {
    args.url.as_ref().map_or_else(
        || {
            format!(
                "http://{}.{namespace}.svc:{GRAFANA_PORT}",
                model.names.grafana
            )
        },
        |u| u.trim_end_matches('/').to_owned(),
    )
}

fn replicas_max(model: &ValidatedMonitor, component: &str) -> Option<i32> {
    model.autoscaling?;
    Some(if component == "grafana" {
        model.grafana.replicas.max
    } else {
        model.coap.replicas.max
    })
}

fn replicas_min(model: &ValidatedMonitor, component: &str) -> i32 {
    if component == "grafana" {
        model.grafana.replicas.min
    } else {
        model.coap.replicas.min
    }
}

/// Five random lowercase letters and digits, so two runs never share a Job name.
fn suffix() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_name_suffixes_are_short_and_lowercase() {
        let s = suffix();
        assert_eq!(s.len(), 5);
        assert!(
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
