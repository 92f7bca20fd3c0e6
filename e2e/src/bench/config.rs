//! The bench's knobs, read once from the environment (the list is in `src/bin/bench.rs`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kube::Client;

use super::floor::Verb;

pub struct Config {
    pub n: usize,
    pub concurrency: usize,
    pub floor_verb: Verb,
    pub settle: Duration,
    /// For each phase to converge, and for each cleanup.
    pub timeout: Duration,
    pub final_cleanup: bool,
    /// Restart berth after its steady state and measure the new process (`BENCH_RESTART`, default 1).
    pub restart: bool,
    /// Where `e2e/build-kro.sh` put kro's controller and CRDs (`BENCH_KRO_DIR`); no kro phase without it.
    pub kro_dir: Option<PathBuf>,
    pub berth_bin: PathBuf,
    pub kubeconfig: PathBuf,
    /// Only for a control plane of `e2e/cluster.sh`: its PID files; the bench may widen its Service range.
    pub cluster_dir: Option<PathBuf>,
    pub out: PathBuf,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(key) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{key}={v} is not a valid value")),
        _ => Ok(default),
    }
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let repo = crate::repo().canonicalize()?;
        let n: usize = env_or("N", 200)?;
        if n == 0 {
            bail!("N must be at least 1");
        }
        let floor_verb = match std::env::var("BENCH_FLOOR_VERB").as_deref() {
            Ok("apply") => Verb::Apply,
            Ok("create" | "") | Err(_) => Verb::Create,
            Ok(other) => bail!("BENCH_FLOOR_VERB={other}: use create or apply"),
        };
        let default_timeout = 600.max(3 * n as u64);
        Ok(Self {
            n,
            concurrency: env_or("BENCH_CONCURRENCY", 8)?,
            floor_verb,
            settle: Duration::from_secs(env_or("BENCH_SETTLE_SECONDS", 60)?),
            timeout: Duration::from_secs(env_or("BENCH_TIMEOUT_SECONDS", default_timeout)?),
            final_cleanup: std::env::var("BENCH_SKIP_FINAL_CLEANUP").map_or(true, |v| v != "1"),
            restart: std::env::var("BENCH_RESTART").map_or(true, |v| v != "0"),
            kro_dir: std::env::var_os("BENCH_KRO_DIR")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            berth_bin: std::env::var_os("BERTH_BIN")
                .map_or_else(|| repo.join("target/release/berth"), PathBuf::from),
            kubeconfig: crate::kubeconfig(),
            cluster_dir: std::env::var_os("BERTH_CLUSTER_DIR")
                .map(PathBuf::from)
                .or_else(|| Some(repo.join(".cluster")))
                .filter(|d| d.join("pids").is_dir()),
            out: repo.join("target/bench"),
        })
    }

    /// A client of the cluster under test; unlike the tests' client, a missing kubeconfig is an error
    /// that says how to run the bench.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).with_context(|| {
            format!(
                "no kubeconfig at {}: run through e2e/bench.sh or set KUBECONFIG",
                self.kubeconfig.display()
            )
        })?;
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(kc, &options).await?;
        Ok(Client::try_from(config)?)
    }
}
