//! What the machine and its processes say about themselves: `/proc` CPU and memory counters, the
//! cluster's component PIDs, versions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The CPU counters a phase compares: the control plane's components and any process it names.
#[derive(Clone, Debug)]
pub struct Meters {
    ticks: f64,
    components: BTreeMap<&'static str, u32>,
}

impl Meters {
    /// The components found in `$BERTH_CLUSTER_DIR/pids`; none for a foreign cluster.
    #[must_use]
    pub fn new(cluster_dir: Option<&Path>) -> Self {
        Self {
            ticks: clock_ticks(),
            components: component_pids(cluster_dir),
        }
    }

    #[must_use]
    pub fn has_components(&self) -> bool {
        !self.components.is_empty()
    }

    /// User + system CPU seconds process `pid` has used so far.
    #[must_use]
    pub fn cpu_seconds(&self, pid: u32) -> Option<f64> {
        cpu_seconds(pid, self.ticks)
    }

    /// CPU seconds of every component so far.
    #[must_use]
    pub fn components(&self) -> BTreeMap<&'static str, f64> {
        self.components
            .iter()
            .filter_map(|(c, pid)| Some((*c, self.cpu_seconds(*pid)?)))
            .collect()
    }
}

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`, 100 on every Linux we meet).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

fn cpu_seconds(pid: u32, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; everything after its closing parenthesis is fixed.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

/// A `kB` line of `/proc/PID/status` (`VmHWM`, `VmRSS`), in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The local control plane's components (`e2e/cluster.sh` PID files), when the cluster is ours.
const COMPONENTS: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

fn component_pids(cluster_dir: Option<&Path>) -> BTreeMap<&'static str, u32> {
    let Some(dir) = cluster_dir else {
        return BTreeMap::new();
    };
    COMPONENTS
        .iter()
        .filter_map(|c| {
            let pid: u32 = std::fs::read_to_string(dir.join("pids").join(format!("{c}.pid")))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Path::new(&format!("/proc/{pid}")).exists().then_some((*c, pid))
        })
        .collect()
}

/// `after - before`, per component present in both.
pub fn delta(
    before: &BTreeMap<&'static str, f64>,
    after: &BTreeMap<&'static str, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(c, a)| Some(((*c).to_owned(), a - before.get(c)?)))
        .collect()
}

/// Total memory of the machine in GiB.
pub fn mem_total_gib() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: f64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0 / 1024.0)
}

/// The 1, 5 and 15-minute load averages.
pub fn load_average() -> Option<String> {
    let l = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// First line of a command's output, or `None`.
pub fn command_line(program: &Path, args: &[&str], dir: Option<&PathBuf>) -> Option<String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let out = cmd.output().ok().filter(|o| o.status.success())?;
    String::from_utf8(out.stdout)
        .ok()
        .and_then(|s| s.lines().next().map(str::to_owned))
}
