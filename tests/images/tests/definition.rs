//! The definition against everything that names images: docker/Dockerfile (stage by stage), the
//! chart and the operator's defaults, and the kind manifest of metrics-server. No tools needed.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use iot_images::definition::{Definition, Entry};
use iot_images::{dockerfile, load_definition, repo_root, workspace_version};

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn docker_stages() -> Vec<dockerfile::Stage> {
    dockerfile::parse(&read("docker/Dockerfile")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_image_has_a_fully_qualified_reference_a_user_and_files() {
    let def = load_definition();
    assert!(def.images.len() >= 7, "{:?}", def.images);
    for image in &def.images {
        let name = &image.name;
        let (repo, tag) = image.reference.rsplit_once(':').expect("name:tag");
        // containerd's CRI resolves a short name to docker.io: only full names are imported.
        // The first component names a registry host when it has a dot or a port, or is localhost.
        let host = repo.split('/').next().unwrap_or_default();
        assert!(
            repo.contains('/') && (host.contains(['.', ':']) || host == "localhost"),
            "[{name}] {repo} is not fully qualified"
        );
        assert!(!tag.is_empty(), "[{name}] has no tag");
        assert!(!image.config.user.is_empty(), "[{name}] sets no user");
        assert!(!image.entries.is_empty(), "[{name}] has no files");
        assert!(
            !image.config.entrypoint.is_empty() || !image.config.cmd.is_empty(),
            "[{name}] has neither entrypoint nor cmd"
        );
    }
}

#[test]
fn our_images_run_as_65532_without_a_shell_under_the_charts_names() {
    let def = load_definition();
    let ours: Vec<_> = def.docker_images().map(|i| i.name.as_str()).collect();
    assert_eq!(
        ours,
        [
            "iot-operator",
            "coap-server",
            "sensor-sim",
            "aqi-ingestor",
            "iot-backup"
        ]
    );
    for image in def.docker_images() {
        let name = &image.name;
        assert_eq!(image.config.user, "65532:65532", "[{name}]");
        assert_eq!(
            image.reference,
            format!("ghcr.io/iot-operator/{name}:${{version}}"),
            "the chart and the operator default to this name"
        );
        for e in &image.entries {
            let dest = e.dest();
            assert!(
                !dest.ends_with("/sh") && !dest.contains("busybox"),
                "[{name}] ships a shell: {dest}"
            );
        }
        // Exactly one executable, at /usr/local/bin/<name>, which is the entrypoint.
        let exes: Vec<_> = image
            .entries
            .iter()
            .filter(|e| matches!(e, Entry::Exe { .. }))
            .collect();
        assert_eq!(exes.len(), 1, "[{name}]");
        assert_eq!(exes[0].dest(), format!("/usr/local/bin/{name}"));
        assert_eq!(image.config.entrypoint, [format!("/usr/local/bin/{name}")]);
    }
}

#[test]
fn images_that_make_tls_calls_carry_ca_certificates() {
    let def = load_definition();
    // iot-backup: to S3 endpoints over https.
    for name in ["iot-operator", "aqi-ingestor", "coap-server", "iot-backup"] {
        let image = def.image(name).expect(name);
        assert!(
            image
                .entries
                .iter()
                .any(|e| e.dest() == "/etc/ssl/certs/ca-certificates.crt"),
            "[{name}] has no CA certificates"
        );
    }
}

/// The Dockerfile must say, stage by stage, what the definition says: otherwise kind and a
/// registry would get other images than the local node.
#[test]
fn the_dockerfile_builds_exactly_the_definitions_images() {
    let def = load_definition();
    let stages = docker_stages();
    let by_name = dockerfile::by_name(&stages);
    let build = by_name.get("build").expect("a build stage");
    assert_eq!(
        Some(build.base.as_str()),
        def.globals.get("builder").map(String::as_str),
        "the build stage's image is the definition's `builder`"
    );
    let ours: Vec<&str> = def.docker_images().map(|i| i.name.as_str()).collect();
    let expected_run = format!(
        "images/docker-build.sh \"$TARGETARCH\" /rootfs {}",
        ours.join(" ")
    );
    assert!(
        build.runs.iter().any(|r| r.ends_with(&expected_run)),
        "the build stage must lay out the files with images/docker-build.sh: {:?}",
        build.runs
    );
    let finals: Vec<&str> = dockerfile::finals(&stages)
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(finals, ours, "one final stage per image marked `docker`");
    for image in def.docker_images() {
        let stage = by_name[image.name.as_str()];
        assert_eq!(stage.base, "scratch", "[{}] starts empty", image.name);
        assert_eq!(
            stage.copies,
            vec![vec![
                "--from=build".to_string(),
                format!("/rootfs/{}/", image.name),
                "/".to_string()
            ]],
            "[{}] its files are the ones images/rootfs.sh laid out, and only those",
            image.name
        );
        assert_eq!(stage.config, image.config, "[{}] config", image.name);
    }
}

#[test]
fn the_dockerfile_is_what_the_generator_prints() {
    let out = std::process::Command::new(repo_root().join("images/dockerfile.sh"))
        .output()
        .expect("images/dockerfile.sh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout) == read("docker/Dockerfile"),
        "docker/Dockerfile is stale: run `make dockerfile`"
    );
}

#[test]
fn the_chart_and_the_workspace_name_one_version() {
    let chart = read("charts/iot-operator/Chart.yaml");
    let v = workspace_version();
    assert!(
        chart.contains(&format!("\nappVersion: \"{v}\"\n")),
        "Chart.yaml appVersion != {v}"
    );
    let values = read("charts/iot-operator/values.yaml");
    assert!(values.contains("repository: ghcr.io/iot-operator/iot-operator\n"));
    assert!(values.contains("pullPolicy: IfNotPresent\n"));
}

#[test]
fn the_kind_metrics_server_runs_the_image_the_definition_builds() {
    let def: Definition = load_definition();
    let image = def.image("metrics-server").expect("[metrics-server]");
    let versions = read("tests/cluster/versions.env");
    let v = versions
        .lines()
        .find_map(|l| l.strip_prefix("METRICS_SERVER_VERSION="))
        .expect("METRICS_SERVER_VERSION");
    let reference = image.reference.replace("${metrics-server-version}", v);
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(&read("deploy/metrics-server.yaml"))
            .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
            .collect();
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"].as_str(), Some(reference.as_str()));
    assert_eq!(container["imagePullPolicy"].as_str(), Some("IfNotPresent"));
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
}
