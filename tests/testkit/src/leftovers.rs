//! What a local cluster may leave on this machine after `tests/cluster/down.sh`: for the tests
//! that start a cluster of their own (the teardown test, the README's quick start) and must show
//! that nothing of it survives.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Everything of a cluster still on this machine: its state directory `state`, anything below
/// `root` (mounts, processes; `root` holds `state`), and its real node in `slot` (`None`: it had
/// none). Each entry says what was found; empty when nothing is left.
pub fn left_behind(root: &Path, state: &Path, slot: Option<&str>) -> Vec<String> {
    let mut left = Vec::new();
    if state.exists() {
        left.push(format!("the state directory {}", state.display()));
    }
    let mounts = mounts_under(root);
    if !mounts.is_empty() {
        left.push(format!("mounts {mounts:?}"));
    }
    let processes = processes_using(root);
    if !processes.is_empty() {
        left.push(format!("processes {processes:?}"));
    }
    if let Some(slot) = slot {
        left.extend(node_left_behind(root, slot));
    }
    left
}

/// The real node's part: its network namespace, veth, routes, cgroups, container logs, libcni's
/// cache and the slot's registration.
fn node_left_behind(root: &Path, slot: &str) -> Vec<String> {
    let mut left = Vec::new();
    let netns = format!("iot-node-{slot}");
    if Path::new(&format!("/run/netns/{netns}")).exists() {
        left.push(format!("network namespace {netns}"));
    }
    if succeeds("ip", &["link", "show", &format!("iotn{slot}")]) {
        left.push(format!("veth iotn{slot}"));
    }
    let routes = stdout("ip", &["route", "show"]).unwrap_or_default();
    for line in routes
        .lines()
        .filter(|l| l.contains(&format!("iotn{slot} ")))
    {
        left.push(format!("route {line}"));
    }
    let cgroups = cgroup_dirs(slot);
    if !cgroups.is_empty() {
        left.push(format!("cgroups {cgroups:?}"));
    }
    for link in entries("/var/log/containers") {
        if std::fs::read_link(&link).is_ok_and(|target| target.starts_with(root)) {
            left.push(format!("the log symlink {}", link.display()));
        }
    }
    for result in entries("/var/lib/cni/results") {
        let name = result.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with(&format!("{netns}-"))) {
            left.push(format!("libcni's cached result {}", result.display()));
        }
    }
    if Path::new(&format!("/run/iot-operator/node-{slot}")).exists() {
        left.push(format!("the registration /run/iot-operator/node-{slot}"));
    }
    left
}

/// Mount points at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == dir || m.starts_with(&format!("{dir}/")))
        .map(str::to_string)
        .collect()
}

/// PIDs and command lines of processes whose command line or working directory names `dir`.
pub fn processes_using(dir: &Path) -> Vec<(u32, String)> {
    let dir = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in entries("/proc") {
        let Some(pid) = entry
            .file_name()
            .and_then(|p| p.to_str())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cwd = std::fs::read_link(entry.join("cwd")).unwrap_or_default();
        if cmdline.contains(&dir) || cwd.starts_with(&dir) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// The real node's cgroup directories (one per hierarchy).
pub fn cgroup_dirs(slot: &str) -> Vec<PathBuf> {
    entries("/sys/fs/cgroup")
        .into_iter()
        .map(|hierarchy| hierarchy.join(format!("iot-node-{slot}")))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// Whether the process `pid` still runs (a zombie counts as gone).
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which is in parentheses and may hold spaces.
            let after = &stat[stat.rfind(')')? + 1..];
            after.split_whitespace().next().map(|s| s != "Z")
        })
        .unwrap_or(false)
}

fn entries(dir: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn stdout(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_made_up_one_does_not() {
        assert!(is_running(std::process::id()));
        assert!(!is_running(u32::MAX));
    }

    #[test]
    fn nothing_is_found_for_a_directory_that_never_existed() {
        let root = Path::new("/nonexistent/iot-leftovers");
        assert!(left_behind(root, &root.join("cluster"), None).is_empty());
    }
}
