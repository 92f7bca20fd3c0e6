//! The berth binary as a real process, the way a cluster runs it: its own kubeconfig (the chart's
//! ServiceAccount when `BERTH_E2E_OPERATOR_KUBECONFIG` is set), leader election on a Lease, probes and
//! metrics on a local port. It stops when the test process goes away, because its standard input closes.
//! The bench runs its release build through the same [`Launch`].

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::metrics::{self, Scrape};
use crate::{kubeconfig, target_dir};

/// Namespace of the leader Lease in the tests (the chart's namespace).
pub const LEASE_NAMESPACE: &str = "berth-system";

pub struct Operator {
    pub name: String,
    pub port: u16,
    child: Mutex<Child>,
    pub log: PathBuf,
}

/// What differs between one berth process and another: the tests' debug build with a short Lease, or
/// the bench's release build.
pub struct Launch<'a> {
    /// The Lease holder is `<name>-<port>`, so a test can tell which of its operators leads.
    pub name: &'a str,
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    /// Where its output goes; `None` is `target/e2e-logs/<name>-<pid>-<port>.log`.
    pub log: Option<PathBuf>,
    pub rust_log: String,
    pub args: Vec<&'a str>,
    /// Applied after `KUBECONFIG`, so a test can point berth somewhere else.
    pub envs: &'a [(&'a str, &'a str)],
}

/// True when berth runs in the cluster already (kind, or any cluster with the chart installed).
#[must_use]
pub fn external() -> bool {
    std::env::var("BERTH_E2E_OPERATOR").is_ok_and(|v| v == "external")
}

/// One operator shared by every test of a test binary, started on first use.
pub fn shared() -> Option<&'static Operator> {
    static SHARED: OnceLock<Operator> = OnceLock::new();
    if external() {
        return None;
    }
    Some(SHARED.get_or_init(|| Operator::start("shared", &[])))
}

impl Launch<'_> {
    pub fn start(self) -> anyhow::Result<Operator> {
        if !self.bin.exists() {
            bail!(
                "{} is missing: build it with `cargo build -p berth-operator` (`--release` for the bench)",
                self.bin.display()
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = match self.log {
            Some(log) => log,
            None => {
                let logs = target_dir().join("e2e-logs");
                std::fs::create_dir_all(&logs)?;
                logs.join(format!("{}-{}-{port}.log", self.name, std::process::id()))
            }
        };
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(&self.bin)
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .args(["--lease-namespace", LEASE_NAMESPACE])
            .args(["--identity", &format!("{}-{port}", self.name)])
            .arg("--stop-on-stdin-eof")
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", &self.rust_log)
            // After RUST_LOG, so a test can turn a module's level up.
            .envs(self.envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        Ok(Operator {
            name: self.name.to_owned(),
            port,
            child: Mutex::new(child),
            log,
        })
    }
}

impl Operator {
    /// Starts `berth` with leader election on, named `name` in the Lease and in its log file.
    pub fn start(name: &str, extra: &[&str]) -> Self {
        Self::start_with_env(name, extra, &[])
    }

    /// [`Operator::start`] with extra environment variables (e.g. the OTLP endpoint).
    pub fn start_with_env(name: &str, extra: &[&str], envs: &[(&str, &str)]) -> Self {
        // A short Lease keeps the hand-over tests fast, unless the test sizes its own.
        let mut args = if extra.contains(&"--lease-seconds") {
            vec![]
        } else {
            vec!["--lease-seconds", "6"]
        };
        args.extend_from_slice(extra);
        Launch {
            name,
            bin: std::env::var_os("BERTH_BIN")
                .map_or_else(|| target_dir().join("debug/berth"), PathBuf::from),
            kubeconfig: std::env::var_os("BERTH_E2E_OPERATOR_KUBECONFIG")
                .map_or_else(kubeconfig, PathBuf::from),
            log: None,
            rust_log: std::env::var("BERTH_E2E_LOG").unwrap_or_else(|_| "info,kube=warn".to_owned()),
            args,
            envs,
        }
        .start()
        .expect("start berth")
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.lock().map(|c| c.id()).unwrap_or_default()
    }

    /// The operator's gauge `berth_leader`: 1 while it holds the Lease.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.metric("berth_leader", &[]).is_some_and(|v| v > 0.5)
    }

    /// Sends a signal (`TERM`, `KILL`) to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{sig} {}", self.pid());
    }

    fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().ok()?.try_wait().ok()?
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until it holds the Lease, at most `within`; fails with its log.
    pub async fn leading(&self, within: Duration) {
        let what = format!("{} to lead; its log:\n{}", self.name, self.log_tail());
        crate::eventually(within, &what, || async { self.is_leader().then_some(()) }).await;
    }

    /// Waits until it leads and its caches have synced (`/readyz` 200), the moment its reconciles count.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                bail!("berth exited ({status}); see {}", self.log.display());
            }
            if self.get("/readyz").is_some_and(|(code, _)| code == 200) && self.is_leader() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("berth not ready after {timeout:?}; see {}", self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops it the way a supervisor does: closes its standard input (a graceful stop), kills it after
    /// `grace`.
    pub fn stop(&self, grace: Duration) {
        if let Ok(mut child) = self.child.lock() {
            drop(child.stdin.take());
        }
        if self.wait(grace).is_none()
            && let Ok(mut child) = self.child.lock()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// GET of a path on the operator's HTTP port: (status code, body), or `None` when nothing listens.
    #[must_use]
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        metrics::get(self.port, path).ok()
    }

    /// Sum of a metric's samples whose labels include every `labels` pair, e.g.
    /// `metric("berth_reconciles_total", &[("controller", "customer")])`; `None` when `/metrics` does
    /// not answer.
    #[must_use]
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        Some(self.scrape().ok()?.sum(name, labels))
    }

    /// Every series of `/metrics` now.
    pub fn scrape(&self) -> anyhow::Result<Scrape> {
        Scrape::fetch(self.port)
    }

    /// The last lines of the operator's log, for failure messages.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
