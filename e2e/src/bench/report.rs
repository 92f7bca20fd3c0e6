//! `result.json`: both phases side by side, with where the run was made and how berth fared against
//! its targets. Targets are reported, never asserted: a run on a busy machine is still worth reading.

use std::path::Path;

use kube::Client;
use serde::Serialize;

use super::Config;
use super::berth::BerthReport;
use super::floor::FloorReport;
use super::kro::KroReport;
use super::sys;

#[derive(Debug, Serialize)]
pub struct Report {
    pub n: usize,
    pub concurrency: usize,
    pub floor_verb: &'static str,
    pub machine: Machine,
    pub versions: Versions,
    pub floor: FloorReport,
    pub berth: BerthReport,
    /// The peer phase; `None` when it did not run (no `BENCH_KRO_DIR`) or failed (`kro_error`).
    pub kro: Option<KroReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kro_error: Option<String>,
    /// T_berth / T_floor, when both phases completed.
    pub ratio: Option<f64>,
    /// T_berth / T_kro, when both phases completed.
    pub ratio_berth_kro: Option<f64>,
    pub targets: Targets,
    pub ready_curves: Curves,
}

/// What the figures depend on besides berth.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub mem_gib: Option<f64>,
    pub load_at_start: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Versions {
    pub kubernetes: String,
    pub berth: String,
    /// The commit, `-dirty` when the tree had changes.
    pub git: String,
}

#[derive(Debug, Serialize)]
pub struct Targets {
    pub ratio_le_1_25: Target,
    pub steady_state_writes_eq_0: Target,
    pub ratio_berth_kro_lt_1: Target,
    pub writes_per_child_object_le_1_5: Target,
    /// Writes of the restarted process until it re-verified every tenant.
    pub restart_writes_eq_0: Target,
    pub operator_rss_lt_64_mib_at_1000: Target,
}

/// `met` is `None` when the run cannot tell (a phase timed out, or N is too small for the target).
#[derive(Debug, Serialize)]
pub struct Target {
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    pub met: Option<bool>,
}

/// When each tenant became Ready, ascending, for the chart.
#[derive(Debug, Serialize)]
pub struct Curves {
    pub floor: Vec<f64>,
    pub berth: Vec<f64>,
    pub kro: Vec<f64>,
}

/// Where and what the run measures, in one line, before it starts.
#[must_use]
pub fn setting(cfg: &Config, machine: &Machine, versions: &Versions) -> String {
    let Versions {
        kubernetes,
        berth,
        git,
    } = versions;
    format!(
        "N={} concurrency={} floor verb={} | {} CPUs, {:.1} GiB, load {} | kubernetes {kubernetes} | {berth} ({git})",
        cfg.n,
        cfg.concurrency,
        cfg.floor_verb.as_str(),
        machine.nproc,
        machine.mem_gib.unwrap_or(0.0),
        machine.load_at_start.as_deref().unwrap_or_default(),
    )
}

impl Machine {
    #[must_use]
    pub fn now() -> Self {
        Self {
            nproc: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            mem_gib: sys::mem_total_gib(),
            load_at_start: sys::load_average(),
        }
    }
}

impl Versions {
    pub async fn read(client: &Client, cfg: &Config) -> anyhow::Result<Self> {
        let repo = crate::repo().canonicalize()?;
        let git = |args: &[&str]| sys::command_line(Path::new("git"), args, Some(&repo));
        let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default();
        let dirty = git(&["status", "--porcelain"]).is_some();
        Ok(Self {
            kubernetes: client.apiserver_version().await?.git_version,
            berth: sys::command_line(&cfg.berth_bin, &["--version"], None).unwrap_or_default(),
            git: if dirty { format!("{commit}-dirty") } else { commit },
        })
    }
}

impl Report {
    pub fn new(
        cfg: &Config,
        machine: Machine,
        versions: Versions,
        mut floor: FloorReport,
        mut berth: BerthReport,
        kro: Result<Option<KroReport>, String>,
    ) -> Self {
        let over = |other: Option<f64>| {
            berth
                .phase
                .t_seconds
                .zip(other)
                .filter(|(_, o)| *o > 0.0)
                .map(|(b, o)| b / o)
        };
        let ratio = over(floor.phase.t_seconds);
        let (mut kro, kro_error) = match kro {
            Ok(k) => (k, None),
            Err(e) => (None, Some(e)),
        };
        let ratio_berth_kro = over(kro.as_ref().and_then(|k| k.phase.t_seconds));
        let steady_writes = berth.steady_state.writes;
        let per_child = berth.writes_per_child_object;
        let rss = berth.operator.peak_rss_mib;
        let restart_writes = berth.restart.as_ref().map(|r| r.writes);
        let targets = Targets {
            ratio_le_1_25: Target::new(ratio, ratio.map(|r| r <= 1.25)),
            steady_state_writes_eq_0: Target::new(Some(steady_writes), Some(steady_writes == 0.0)),
            ratio_berth_kro_lt_1: Target::new(ratio_berth_kro, ratio_berth_kro.map(|r| r < 1.0)),
            writes_per_child_object_le_1_5: Target::new(Some(per_child), Some(per_child <= 1.5)),
            restart_writes_eq_0: Target::new(restart_writes, restart_writes.map(|w| w == 0.0)),
            // At smaller N the operator holds less, so only a run at 1000 or more can meet it.
            operator_rss_lt_64_mib_at_1000: Target {
                n: Some(cfg.n),
                ..Target::new(rss, rss.filter(|_| cfg.n >= 1000).map(|r| r < 64.0))
            },
        };
        let ready_curves = Curves {
            floor: std::mem::take(&mut floor.phase.curve),
            berth: std::mem::take(&mut berth.phase.curve),
            kro: kro
                .as_mut()
                .map(|k| std::mem::take(&mut k.phase.curve))
                .unwrap_or_default(),
        };
        Self {
            n: cfg.n,
            concurrency: cfg.concurrency,
            floor_verb: cfg.floor_verb.as_str(),
            machine,
            versions,
            floor,
            berth,
            kro,
            kro_error,
            ratio,
            ratio_berth_kro,
            targets,
            ready_curves,
        }
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        Ok(std::fs::write(path, serde_json::to_string_pretty(self)?)?)
    }
}

impl Target {
    fn new(value: Option<f64>, met: Option<bool>) -> Self {
        Self { value, n: None, met }
    }
}
