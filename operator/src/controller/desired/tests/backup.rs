//! The backup volume, CronJob and restore Job, and what backups change in InfluxDB's objects
//! and the NetworkPolicies.

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::constants::INFLUX_RPC_PORT;
use crate::controller::dereference::ReferencedSecret;
use crate::controller::fixtures::{monitor, present};
use crate::controller::validate::validate;

const BACKUP: &str = "{influxdb: {backup: {schedule: '0 3 * * *', keep: 5}}}";
const S3: &str = "{influxdb: {backup: {schedule: '@daily', destination: {s3: {endpoint: 'http://198.18.0.9:8333', bucket: iot, prefix: lab, credentialsSecret: s3-keys}}}}}";
const RESTORE: &str = "{influxdb: {restoreFrom: {backup: latest}}}";

fn env_of(spec: &PodSpec, container: &str, name: &str) -> Option<String> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container)
        .and_then(|c| env_value(c, name))
}

/// The InfluxDB StatefulSet's pod spec.
fn influxd(objects: &DesiredObjects) -> PodSpec {
    pod_specs(objects)
        .into_iter()
        .find(|(n, _)| n == "lab-influxdb")
        .expect("influxdb")
        .1
}

fn rpc_ports(policy: &NetworkPolicy) -> usize {
    policy
        .spec
        .iter()
        .flat_map(|s| s.ingress.iter().flatten())
        .flat_map(|r| r.ports.iter().flatten())
        .filter(|p| p.port == Some(IntOrString::Int(INFLUX_RPC_PORT)))
        .count()
}

fn policy<'a>(objects: &'a DesiredObjects, name: &str) -> Option<&'a NetworkPolicy> {
    objects
        .network_policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
}

#[test]
fn without_backups_nothing_opens_the_rpc_port() {
    let objects = desired("{}");
    assert!(objects.cron_jobs.is_empty() && objects.jobs.is_empty());
    assert_eq!(
        names(&objects.persistent_volume_claims),
        ["lab-influxdb-data"]
    );
    assert_eq!(
        env_of(&influxd(&objects), "influxdb", "INFLUXDB_BIND_ADDRESS"),
        None
    );
    assert_eq!(
        rpc_ports(policy(&objects, "lab-influxdb").expect("policy")),
        0
    );
    assert!(policy(&objects, "lab-backup").is_none());
}

#[test]
fn a_schedule_builds_a_forbid_cronjob_that_backs_up_through_the_rpc_port_to_a_kept_volume() {
    let objects = desired(BACKUP);
    let [cron] = objects.cron_jobs.as_slice() else {
        panic!("one CronJob");
    };
    assert_eq!(cron.metadata.name.as_deref(), Some("lab-backup"));
    let spec = &cron.spec;
    assert_eq!(spec.schedule, "0 3 * * *");
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert_eq!(spec.successful_jobs_history_limit, Some(3));
    assert_eq!(spec.failed_jobs_history_limit, Some(3));
    let job = spec.job_template.spec.as_ref().expect("job spec");
    assert_eq!(job.backoff_limit, Some(0));
    let pod = job.template.spec.as_ref().expect("pod");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let init = &pod.init_containers.as_ref().expect("init")[0];
    assert_eq!(init.name, "influxd-backup");
    let limits = init
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .expect("limits");
    assert_eq!(limits.get("cpu").map(|q| q.0.as_str()), Some("250m"));
    assert!(
        init.command.as_ref().expect("command")[2].contains("influxd backup -portable"),
        "{:?}",
        init.command
    );
    assert_eq!(
        env_of(pod, "influxd-backup", "INFLUX_RPC").as_deref(),
        Some("lab-influxdb-hl.iot.svc:8088")
    );
    assert_eq!(env_of(pod, "store", "BACKUP_KEEP").as_deref(), Some("5"));
    assert_eq!(
        env_of(pod, "store", "BACKUP_DIR").as_deref(),
        Some("/backups")
    );
    assert_eq!(env_of(pod, "store", "MONITOR").as_deref(), Some("lab"));
    // The runs carry the monitor's labels, so the operator's watch sees them.
    let labels = cron.metadata.labels.clone().expect("labels");
    assert_eq!(
        spec.job_template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone()),
        Some(labels)
    );

    let volume = objects
        .persistent_volume_claims
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("lab-backups"))
        .expect("the backup volume");
    assert!(
        volume.metadata.owner_references.is_none(),
        "backups outlive the monitor"
    );

    let influxd = influxd(&objects);
    assert_eq!(
        env_of(&influxd, "influxdb", "INFLUXDB_BIND_ADDRESS").as_deref(),
        Some(":8088")
    );
    assert_eq!(env_of(&influxd, "setup", "INFLUX_RESTORE"), None);
    let headless = objects
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("lab-influxdb-hl"))
        .and_then(|s| s.spec.clone())
        .expect("headless");
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
    // Only the backup pods reach the RPC port, and they reach only InfluxDB.
    assert_eq!(
        rpc_ports(policy(&objects, "lab-influxdb").expect("policy")),
        1
    );
    let backup = policy(&objects, "lab-backup").expect("backup pods' policy");
    let egress = backup
        .spec
        .as_ref()
        .and_then(|s| s.egress.clone())
        .expect("egress");
    assert_eq!(egress.len(), 1, "{egress:?}");
}

#[test]
fn an_s3_destination_takes_its_keys_from_the_secret_and_may_reach_the_endpoint_only() {
    let objects = desired(S3);
    assert_eq!(
        names(&objects.persistent_volume_claims),
        ["lab-influxdb-data"]
    );
    let pod = objects.cron_jobs[0]
        .spec
        .job_template
        .spec
        .as_ref()
        .and_then(|j| j.template.spec.clone())
        .expect("pod");
    assert_eq!(env_of(&pod, "store", "S3_BUCKET").as_deref(), Some("iot"));
    assert_eq!(env_of(&pod, "store", "S3_PREFIX").as_deref(), Some("lab"));
    let store = pod
        .containers
        .iter()
        .find(|c| c.name == "store")
        .expect("store");
    let key = store
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "AWS_SECRET_ACCESS_KEY")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("from the Secret");
    assert_eq!(
        (key.name.as_str(), key.key.as_str()),
        ("s3-keys", "secretAccessKey")
    );
    let egress = policy(&objects, "lab-backup")
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.egress.clone())
        .expect("egress");
    let to_s3 = &egress[1];
    assert_eq!(
        to_s3
            .to
            .as_ref()
            .and_then(|t| t[0].ip_block.clone())
            .map(|b| b.cidr),
        Some("198.18.0.9/32".to_owned())
    );
}

#[test]
fn an_s3_secret_that_does_not_opt_in_builds_no_backup_pod() {
    let m = monitor(S3);
    let mut refs = present(&m);
    refs.backup_credentials = Some(ReferencedSecret::NotOptedIn);
    let model = validate(&m, &refs).expect("the rest of the stack is valid");
    let objects = build(&model);
    assert!(objects.cron_jobs.is_empty());
    let blocked = model.backup.expect("backup").target.expect_err("blocked");
    assert_eq!(blocked.reason, "CredentialsNotAllowed");
    assert!(
        blocked
            .message
            .contains("kubectl label secret s3-keys -n iot iot.operator.dev/allow-backup=true"),
        "{}",
        blocked.message
    );
    // Still the whole stack.
    assert!(!objects.deployments.is_empty());
}

#[test]
fn a_restore_holds_the_databases_and_runs_a_job_named_after_the_backup() {
    let objects = desired(RESTORE);
    let [job] = objects.jobs.as_slice() else {
        panic!("one restore Job");
    };
    let name = job.metadata.name.clone().expect("name");
    assert!(name.starts_with("lab-restore-"), "{name}");
    let other = desired("{influxdb: {restoreFrom: {backup: lab-20270101T000000Z.tar.gz}}}");
    assert_ne!(other.jobs[0].metadata.name.as_deref(), Some(name.as_str()));
    assert!(job.metadata.owner_references.is_some());
    let spec = job.spec.as_ref().expect("spec");
    let pod = spec.template.spec.as_ref().expect("pod");
    assert_eq!(
        env_of(pod, "fetch", "RESTORE_BACKUP").as_deref(),
        Some("latest")
    );
    // The fetch step reads the backup volume, and cannot write it.
    let fetch = &pod.init_containers.as_ref().expect("init")[0];
    assert!(
        fetch
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == "/backups" && m.read_only == Some(true))
    );
    assert_eq!(
        env_of(pod, "restore", "INFLUX_HOST").as_deref(),
        Some("lab-influxdb-hl.iot.svc")
    );
    let setup = objects
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("lab-influxdb-setup"))
        .and_then(|c| c.data.clone())
        .expect("setup");
    assert!(setup.contains_key("restore.sh"));
    let influxd = influxd(&objects);
    assert_eq!(
        env_of(&influxd, "setup", "INFLUX_RESTORE").as_deref(),
        Some("latest")
    );
    // The restore pod reaches HTTP and RPC; no backup pod is asked for.
    assert_eq!(
        rpc_ports(policy(&objects, "lab-influxdb").expect("policy")),
        1
    );
    assert!(objects.cron_jobs.is_empty());
    // From the backup volume, which is applied (kept) for it.
    assert!(names(&objects.persistent_volume_claims).contains(&"lab-backups".to_owned()));
}

#[test]
fn backup_and_restore_pods_pass_the_restricted_standard() {
    let objects =
        desired("{influxdb: {backup: {schedule: '@hourly'}, restoreFrom: {backup: latest}}}");
    let cron_pod = objects.cron_jobs[0]
        .spec
        .job_template
        .spec
        .as_ref()
        .and_then(|j| j.template.spec.clone())
        .expect("pod");
    let restore_pod = objects.jobs[0]
        .spec
        .as_ref()
        .and_then(|j| j.template.spec.clone())
        .expect("pod");
    for pod in [cron_pod, restore_pod] {
        let security = pod.security_context.as_ref().expect("pod security");
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(pod.automount_service_account_token, Some(false));
        for c in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let s = c.security_context.as_ref().expect("container security");
            assert_eq!(s.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(s.read_only_root_filesystem, Some(true), "{}", c.name);
            assert!(c.resources.as_ref().is_some_and(|r| r.requests.is_some()));
        }
    }
}

#[test]
fn backups_are_suspended_until_the_restore_has_ended() {
    let spec = "{influxdb: {backup: {schedule: '@hourly'}, restoreFrom: {backup: latest}}}";
    let restoring = model(spec);
    let cron = &build(&restoring).cron_jobs[0];
    assert_eq!(cron.spec.suspend, Some(true));
    let job = restoring.restore.clone().expect("restore").job;
    let status = |phase: &str| crate::crd::RestoreStatus {
        requested: "latest".into(),
        phase: phase.into(),
        backup: None,
        message: String::new(),
        job: job.clone(),
    };
    let running = model(spec).with_restore_status(Some(&status("Running")));
    assert_eq!(build(&running).cron_jobs[0].spec.suspend, Some(true));
    let done = model(spec).with_restore_status(Some(&status("Restored")));
    assert_eq!(build(&done).cron_jobs[0].spec.suspend, None);
    // Refused too: the volume holds data of its own, which is worth backing up.
    let refused = model(spec).with_restore_status(Some(&status("Refused")));
    assert_eq!(build(&refused).cron_jobs[0].spec.suspend, None);
}
