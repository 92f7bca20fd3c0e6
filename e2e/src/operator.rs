//! The berth binary as a real process, the way a cluster runs it: its own kubeconfig (the chart's
//! ServiceAccount when `BERTH_E2E_OPERATOR_KUBECONFIG` is set), leader election on a Lease, probes and
//! metrics on a local port. It stops when the test process goes away, because its standard input closes.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::{kubeconfig, repo};

/// Namespace of the leader Lease in the tests (the chart's namespace).
pub const LEASE_NAMESPACE: &str = "berth-system";

pub struct Operator {
    pub name: String,
    pub port: u16,
    child: Mutex<Child>,
    pub log: PathBuf,
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn binary() -> PathBuf {
    std::env::var_os("BERTH_BIN").map_or_else(|| repo().join("target/debug/berth"), PathBuf::from)
}

impl Operator {
    /// Starts `berth` with leader election on, named `name` in the Lease and in its log file.
    pub fn start(name: &str, extra: &[&str]) -> Self {
        Self::start_with_env(name, extra, &[])
    }

    /// [`Operator::start`] with extra environment variables (e.g. the OTLP endpoint).
    pub fn start_with_env(name: &str, extra: &[&str], envs: &[(&str, &str)]) -> Self {
        let port = free_port();
        let logs = repo().join("target/e2e-logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let log = logs.join(format!("{name}-{}-{port}.log", std::process::id()));
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let kubeconfig =
            std::env::var_os("BERTH_E2E_OPERATOR_KUBECONFIG").map_or_else(kubeconfig, PathBuf::from);
        let bin = binary();
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build -p berth-operator` first",
            bin.display()
        );
        let child = Command::new(bin)
            .args([
                "--http-addr",
                &format!("127.0.0.1:{port}"),
                "--lease-namespace",
                LEASE_NAMESPACE,
            ])
            .args([
                "--identity",
                &format!("{name}-{port}"),
                "--lease-seconds",
                "6",
                "--stop-on-stdin-eof",
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .envs(envs.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("BERTH_E2E_LOG").unwrap_or_else(|_| "info,kube=warn".to_owned()),
            )
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start berth");
        Self {
            name: name.to_owned(),
            port,
            child: Mutex::new(child),
            log,
        }
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

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.lock().expect("child").try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET of a path on the operator's HTTP port: (status code, body), or `None` when nothing listens.
    #[must_use]
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let code = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((code, body))
    }

    /// Sum of a metric's samples whose label set contains every `labels` pair, e.g.
    /// `metric("berth_reconciles_total", &[("controller", "customer")])`.
    #[must_use]
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        Some(sum_metric(&body, name, labels))
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

/// Sums the samples of `name` in Prometheus text whose labels include all of `labels`.
#[must_use]
pub fn sum_metric(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::sum_metric;

    #[test]
    fn sums_matching_series_only() {
        let body = "# HELP x\nberth_reconciles_total{controller=\"customer\"} 3\nberth_reconciles_total{controller=\"database\"} 4\nberth_leader 1\n";
        assert!(
            (sum_metric(body, "berth_reconciles_total", &[("controller", "customer")]) - 3.0).abs()
                < f64::EPSILON
        );
        assert!((sum_metric(body, "berth_reconciles_total", &[]) - 7.0).abs() < f64::EPSILON);
        assert!((sum_metric(body, "berth_leader", &[]) - 1.0).abs() < f64::EPSILON);
        assert!(sum_metric(body, "berth_missing", &[]).abs() < f64::EPSILON);
    }
}
