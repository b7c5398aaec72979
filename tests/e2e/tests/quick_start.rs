//! The README's operator quick start, run as a newcomer runs it: every command of the first code
//! block under "## Operator quick start", in order, from the repository's root. The block is read
//! from README.md itself, so the README and this test cannot drift apart.
//!
//! Two things differ from a newcomer's shell, so the test never touches a cluster of yours:
//! `IOT_CLUSTER_DIR` points `make dev` and `make cluster-down` at a fresh state directory of the
//! test's own, and the README's `$PWD/.run/cluster` is read as that directory. `kubectl` is the
//! cluster's own (`tests/cluster/build.sh --print`), as the README says.
//!
//! It starts a whole local cluster (with the real node: needs root, like the rest of `make
//! test`); `scripts/test.sh` runs it after the other tests, on its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use iot_testkit::cluster::repo_dir;
use iot_testkit::leftovers;

const SECTION: &str = "## Operator quick start";
/// The README's state directory, which the test replaces with its own.
const README_STATE: &str = "$PWD/.run/cluster";

/// The commands of the README's quick-start block, without their comments.
fn quick_start_commands(readme: &str) -> Result<Vec<String>> {
    let section = readme
        .split_once(SECTION)
        .with_context(|| format!("README.md has no {SECTION:?}"))?
        .1;
    let block = section
        .split_once("```sh\n")
        .context("no ```sh block in the quick start")?
        .1
        .split_once("```")
        .context("the quick start's block does not end")?
        .0;
    Ok(block
        .lines()
        .map(|line| match line.find(" #") {
            Some(comment) => &line[..comment],
            None => line,
        })
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Whether `kubectl get iotmon`'s table shows `name` with READY `True`.
fn ready_in_table(table: &str, name: &str) -> bool {
    let mut lines = table.lines();
    let Some(header) = lines.next() else {
        return false;
    };
    let Some(ready) = header.split_whitespace().position(|c| c == "READY") else {
        return false;
    };
    lines.any(|row| {
        let cells: Vec<&str> = row.split_whitespace().collect();
        cells.first() == Some(&name) && cells.get(ready) == Some(&"True")
    })
}

/// The PIDs a state directory recorded (`pids/*.pid`: "PID BINARY").
fn recorded_pids(state: &Path) -> BTreeMap<String, u32> {
    let mut pids = BTreeMap::new();
    for entry in std::fs::read_dir(state.join("pids"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().replace(".pid", "");
        let pid = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse().ok());
        if let Some(pid) = pid {
            pids.insert(name, pid);
        }
    }
    pids
}

/// A newcomer's shell: the repository's root, the cluster's kubectl first on PATH, no
/// KUBECONFIG of the test run's own cluster, and the test's state directory.
struct Shell {
    state: PathBuf,
    path: String,
    kubeconfig: Option<String>,
    down: bool,
}

impl Shell {
    fn new(state: PathBuf) -> Result<Self> {
        let out = Command::new(repo_dir().join("tests/cluster/build.sh"))
            .arg("--print")
            .output()?;
        ensure!(
            out.status.success(),
            "tests/cluster/build.sh --print failed"
        );
        let bin = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
        Ok(Self {
            state,
            path,
            kubeconfig: None,
            down: false,
        })
    }

    /// Runs one line of the README; its stdout and stderr.
    fn run(&mut self, line: &str) -> Result<(String, String)> {
        if let Some(value) = line.strip_prefix("export KUBECONFIG=") {
            let state = self.state.to_string_lossy();
            self.kubeconfig = Some(value.replace(README_STATE, &state));
            return Ok(Default::default());
        }
        if line.starts_with("make cluster-down") {
            self.down = true;
        }
        let mut command = Command::new("bash");
        command
            .args(["-c", line])
            .current_dir(repo_dir())
            .env("PATH", &self.path)
            .env("IOT_CLUSTER_DIR", &self.state)
            .env_remove("KUBECONFIG")
            .env_remove("IOT_REAL_NODE");
        // Under `make test` the test inherits make's variables, and a make started with them
        // counts as recursive and prints "Entering/Leaving directory" on stdout.
        for var in ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"] {
            command.env_remove(var);
        }
        if let Some(kubeconfig) = &self.kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let out = command
            .output()
            .with_context(|| format!("running {line}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        ensure!(
            out.status.success(),
            "`{line}` failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        Ok((stdout, stderr))
    }
}

impl Drop for Shell {
    /// A failed run still stops its cluster.
    fn drop(&mut self) {
        if !self.down {
            let _ = Command::new("make")
                .arg("cluster-down")
                .current_dir(repo_dir())
                .env("IOT_CLUSTER_DIR", &self.state)
                .env_remove("MAKEFLAGS")
                .env_remove("MAKELEVEL")
                .status();
        }
    }
}

#[test]
fn readme_operator_quick_start_runs_on_a_fresh_state_directory() -> Result<()> {
    let readme = std::fs::read_to_string(repo_dir().join("README.md"))?;
    let commands = quick_start_commands(&readme)?;
    for expected in ["make dev", "kubectl get iotmon", "make cluster-down"] {
        ensure!(
            commands.iter().any(|c| c == expected),
            "the quick start no longer runs `{expected}`: {commands:?}"
        );
    }
    let export = format!("export KUBECONFIG={README_STATE}/kubeconfig");
    ensure!(
        commands.contains(&export),
        "the quick start no longer says `{export}`: {commands:?}"
    );

    let tmp = tempfile::Builder::new()
        .prefix("iot-quick-start-")
        .tempdir_in("/tmp")?;
    let state = tmp.path().join("cluster");
    let mut shell = Shell::new(state.clone())?;
    let mut recorded = BTreeMap::new();
    let mut slot = None;
    for line in &commands {
        if line.starts_with("make cluster-down") {
            recorded = recorded_pids(&state);
            slot = std::fs::read_to_string(state.join("node/slot"))
                .ok()
                .map(|s| s.trim().to_owned());
        }
        let (stdout, stderr) = shell.run(line)?;
        if line == "make dev" {
            let printed = stdout.lines().last().unwrap_or_default();
            let expected = format!("export KUBECONFIG={}/kubeconfig", state.display());
            ensure!(
                printed == expected,
                "make dev's last line is {printed:?}, not {expected:?}:\n{stderr}"
            );
        }
        if line == "kubectl get iotmon" && !ready_in_table(&stdout, "lab") {
            bail!("`kubectl get iotmon` does not show lab Ready:\n{stdout}\n{stderr}");
        }
    }

    ensure!(
        recorded.contains_key("operator") && recorded.contains_key("kube-apiserver"),
        "make dev recorded no operator or API server: {recorded:?}"
    );
    let running: Vec<_> = recorded
        .iter()
        .filter(|(_, pid)| leftovers::is_running(**pid))
        .collect();
    let mut left = leftovers::left_behind(tmp.path(), &state, slot.as_deref());
    if !running.is_empty() {
        left.push(format!("processes still running: {running:?}"));
    }
    ensure!(left.is_empty(), "make cluster-down left behind: {left:#?}");
    Ok(())
}

#[test]
fn the_quick_start_block_is_read_without_comments() -> Result<()> {
    let readme = "# x\n## Operator quick start\ntext\n```sh\nmake dev    # starts it\n\n\
                  kubectl get iotmon   # NAME READY\n```\n```sh\nnot this\n```\n";
    assert_eq!(
        quick_start_commands(readme)?,
        ["make dev", "kubectl get iotmon"]
    );
    Ok(())
}

#[test]
fn ready_is_read_from_the_ready_column() {
    let table = "NAME   READY   INFLUXDB   GRAFANA\nlab    True    1/1        http://x\n\
                 other  False   0/1        -\n";
    assert!(ready_in_table(table, "lab"));
    assert!(!ready_in_table(table, "other"));
    assert!(!ready_in_table(table, "missing"));
    assert!(!ready_in_table("", "lab"));
}
