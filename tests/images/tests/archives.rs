//! The archives `make images` writes, against the definition: reference, config, files, size;
//! and the Dockerfile's build stage, run here natively, lays out the very same files.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use iot_images::definition::{Entry, ImageDef};
use iot_images::oci::{Node, tree};
use iot_images::{archive, built_images, load_definition, repo_root, run, workspace_version};

/// The reference with the definition's variables expanded, as the builder does.
fn expected_reference(image: &ImageDef) -> String {
    let deb = |pkg: &str| {
        let v = run(Command::new("dpkg-query").args(["-W", "-f=${Version}", pkg])).expect(pkg);
        let v = v.split_once(':').map_or(v.as_str(), |(_, v)| v).to_string();
        let v = v
            .rsplit_once('-')
            .map_or(v.as_str(), |(v, _)| v)
            .to_string();
        v.replace(['~', '+'], "-")
    };
    let versions = std::fs::read_to_string(repo_root().join("tests/cluster/versions.env")).unwrap();
    let ms = versions
        .lines()
        .find_map(|l| l.strip_prefix("METRICS_SERVER_VERSION="))
        .unwrap_or_default();
    image
        .reference
        .replace("${version}", &workspace_version())
        .replace("${deb:influxdb}", &deb("influxdb"))
        .replace("${metrics-server-version}", ms)
}

fn host_arch() -> String {
    run(Command::new("dpkg").arg("--print-architecture"))
        .expect("dpkg")
        .trim()
        .to_string()
}

#[test]
fn each_archive_carries_the_definitions_reference_and_config() {
    let Some(dir) = built_images() else { return };
    for image in &load_definition().images {
        let a = archive(&dir, &image.name);
        assert_eq!(a.reference, expected_reference(image), "[{}]", image.name);
        assert_eq!(a.config(), image.config, "[{}] config", image.name);
        assert_eq!(a.image["os"], "linux");
        assert_eq!(a.image["architecture"], host_arch().as_str());
    }
}

/// The shared objects (interpreter and DT_NEEDED) of every ELF file in a tree, as paths inside.
fn needed_libraries(root: &Path, files: &BTreeMap<String, Node>) -> BTreeSet<String> {
    let mut needed = BTreeSet::new();
    for (path, node) in files {
        let Node::File { .. } = node else { continue };
        let host = root.join(path.trim_start_matches('/'));
        let Ok(dynamic) = run(Command::new("readelf").args(["-dlW"]).arg(&host)) else {
            continue; // not an ELF file
        };
        for line in dynamic.lines() {
            if let Some(interp) = line.split("[Requesting program interpreter: ").nth(1) {
                needed.insert(interp.trim_end_matches(']').to_string());
            }
            if line.contains("(NEEDED)")
                && let Some(lib) = line.split("Shared library: [").nth(1)
            {
                let lib = lib.trim_end_matches(']');
                let found = files
                    .keys()
                    .find(|p| p.rsplit('/').next() == Some(lib) && p.contains("/lib"));
                needed.insert(found.cloned().unwrap_or_else(|| format!("<missing {lib}>")));
            }
        }
    }
    needed
}

fn sha256(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path))
        .expect("sha256sum")
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn source_path(src: &str) -> PathBuf {
    let release = repo_root().join("target/release");
    let src = src.replace("${release}", release.to_str().unwrap_or_default());
    if src.starts_with('/') {
        PathBuf::from(src)
    } else {
        repo_root().join(src)
    }
}

#[test]
fn each_image_holds_the_listed_files_and_only_the_libraries_they_need() {
    let Some(dir) = built_images() else { return };
    for image in &load_definition().images {
        let name = &image.name;
        let bundle = archive(&dir, name).unpack().expect("unpack");
        let files = bundle.tree().expect("tree");
        let listed: BTreeSet<String> = image.entries.iter().map(|e| e.dest().to_string()).collect();
        for entry in &image.entries {
            let got = files.get(entry.dest());
            match entry {
                Entry::Link { target, .. } => {
                    assert_eq!(got, Some(&Node::Link(target.clone())), "[{name}] {entry:?}");
                }
                Entry::File { src, dest } | Entry::Exe { src, dest }
                    if !src.contains("${metrics-server}") =>
                {
                    let Some(Node::File { sha, .. }) = got else {
                        panic!("[{name}] {dest} is missing or not a file: {got:?}")
                    };
                    assert_eq!(
                        *sha,
                        sha256(&source_path(src)),
                        "[{name}] {dest} differs from {src}"
                    );
                }
                _ => assert!(matches!(got, Some(Node::File { .. })), "[{name}] {entry:?}"),
            }
        }
        let needed = needed_libraries(&bundle.rootfs(), &files);
        assert!(
            !needed.iter().any(|l| l.starts_with("<missing")),
            "[{name}] needs libraries it lacks: {needed:?}"
        );
        for (path, node) in &files {
            match node {
                Node::Dir { mode } => assert_eq!(*mode, 0o755, "[{name}] {path}"),
                Node::Link(_) => assert!(listed.contains(path), "[{name}] unlisted link {path}"),
                Node::File { mode, uid, gid, .. } => {
                    assert!(
                        listed.contains(path) || needed.contains(path),
                        "[{name}] {path} is neither listed nor needed by an executable"
                    );
                    assert_eq!((*uid, *gid), (0, 0), "[{name}] {path} belongs to root");
                    assert_eq!(
                        mode & 0o7022,
                        0,
                        "[{name}] {path}: no setuid, no group/other write"
                    );
                }
            }
        }
    }
}

/// Goal of the project: at most 15 MB per image of ours (compressed, as stored and pulled).
#[test]
fn our_images_are_at_most_15_mb() {
    let Some(dir) = built_images() else { return };
    for image in load_definition().docker_images() {
        let bytes = archive(&dir, &image.name).bytes();
        eprintln!("image {} {bytes}", image.name);
        assert!(bytes <= 15_000_000, "[{}] is {bytes} bytes", image.name);
    }
}

/// The Dockerfile's build stage runs images/docker-build.sh; run here for this machine's
/// architecture, it must lay out exactly the files the local archives hold.
#[test]
fn the_dockerfile_build_stage_lays_out_the_same_files_as_the_local_build() {
    let Some(dir) = built_images() else { return };
    let def = load_definition();
    let names: Vec<&str> = def.docker_images().map(|i| i.name.as_str()).collect();
    let out = tempfile::tempdir().expect("tempdir");
    run(Command::new(repo_root().join("images/docker-build.sh"))
        .arg(host_arch())
        .arg(out.path())
        .args(&names))
    .unwrap_or_else(|e| panic!("{e}"));
    for name in names {
        let docker = tree(&out.path().join(name)).expect("tree");
        let bundle = archive(&dir, name).unpack().expect("unpack");
        let local = bundle.tree().expect("tree");
        assert_eq!(docker, local, "[{name}] the two builders' files differ");
    }
}
