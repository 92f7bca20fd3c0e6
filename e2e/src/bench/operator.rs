//! berth itself, the release binary run as a process the way the e2e harness runs it, but with the
//! bench's flags: its own HTTP port, the Lease in `berth-system`, identity `bench`.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::prom;

pub struct Operator {
    child: Child,
    /// Closing it stops berth (`--stop-on-stdin-eof`), also when the bench dies.
    stdin: Option<ChildStdin>,
    pub port: u16,
    pub log: PathBuf,
}

impl Operator {
    pub fn start(bin: &Path, kubeconfig: &Path, log: PathBuf) -> anyhow::Result<Self> {
        if !bin.exists() {
            bail!(
                "{} is missing: run `cargo build --release -p berth-operator`",
                bin.display()
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut child = Command::new(bin)
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .args(["--lease-namespace", "berth-system", "--identity", "bench"])
            .arg("--stop-on-stdin-eof")
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "info,kube=warn".to_owned()),
            )
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdin = child.stdin.take();
        Ok(Self {
            child,
            stdin,
            port,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until berth leads and its caches have synced (`/readyz` 200 with `berth_leader` 1).
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("berth exited ({status}); see {}", self.log.display());
            }
            let ready = prom::get(self.port, "/readyz").is_ok_and(|(code, _)| code == 200);
            let leader = prom::scrape(self.port).is_ok_and(|s| s.sum("berth_leader") > 0.5);
            if ready && leader {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("berth not ready after {timeout:?}; see {}", self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops berth the way a supervisor does: close stdin (graceful), kill after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        drop(self.stdin.take());
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
