//! A real OpenTelemetry Collector for tests: built from the Go module proxy by `e2e/build-otelcol.sh`
//! (once, into `${BERTH_CACHE:-~/.cache/berth}`; `BERTH_OTELCOL=/path/to/otelcol` uses that binary instead),
//! receiving OTLP/HTTP on a free loopback port and writing what it receives as JSON with its file exporter.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const COLLECTOR_START: Duration = Duration::from_secs(60);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// One exported span, flattened out of the collector's `ExportTraceServiceRequest` JSON.
#[derive(Debug)]
pub struct ExportedSpan {
    pub name: String,
    pub trace_id: String,
    pub scope: String,
    pub attributes: std::collections::BTreeMap<String, String>,
    pub resource: std::collections::BTreeMap<String, String>,
}

/// A running collector; killed on drop. Its directory (config, log, exported spans) is kept when the test
/// fails, and named in the failure.
pub struct Collector {
    child: Child,
    pub dir: PathBuf,
    addr: SocketAddr,
}

impl Collector {
    #[must_use]
    pub fn start(binary: &Path) -> Self {
        let dir = temp_dir("berth-otlp");
        let addr = free_port();
        let config = format!(
            r#"receivers:
  otlp:
    protocols:
      http:
        endpoint: {addr}
exporters:
  file:
    path: {spans}
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
"#,
            spans = dir.join("spans.json").display()
        );
        fs::write(dir.join("config.yaml"), config).unwrap();
        let log = fs::File::create(dir.join("collector.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config=file:{}", dir.join("config.yaml").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut collector = Self { child, dir, addr };
        let deadline = Instant::now() + COLLECTOR_START;
        while TcpStream::connect_timeout(&addr, POLL).is_err() {
            if let Some(status) = collector.child.try_wait().unwrap() {
                collector.fail(&format!(
                    "collector exited with {status} before listening on {addr}"
                ));
            }
            if Instant::now() > deadline {
                collector.fail(&format!(
                    "collector not listening on {addr} after {COLLECTOR_START:?}"
                ));
            }
            std::thread::sleep(POLL);
        }
        collector
    }

    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until the collector has written a span named `span` whose attribute `key` is `value`.
    #[must_use]
    pub fn wait_for_span(&self, span: &str, key: &str, value: &str) -> ExportedSpan {
        let deadline = Instant::now() + EXPORT_TIMEOUT;
        loop {
            let found = self
                .spans()
                .into_iter()
                .find(|s| s.name == span && s.attributes.get(key).is_some_and(|v| v == value));
            if let Some(found) = found {
                return found;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "no {span} span with {key}={value} exported within {EXPORT_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Every span exported so far.
    #[must_use]
    pub fn spans(&self) -> Vec<ExportedSpan> {
        let text = fs::read_to_string(self.dir.join("spans.json")).unwrap_or_default();
        let mut spans = Vec::new();
        // One ExportTraceServiceRequest per line; a line being written may be incomplete.
        for request in text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        {
            for resource_spans in array(&request["resourceSpans"]) {
                let resource = attributes(&resource_spans["resource"]["attributes"]);
                for scope_spans in array(&resource_spans["scopeSpans"]) {
                    for span in array(&scope_spans["spans"]) {
                        spans.push(ExportedSpan {
                            name: string(&span["name"]),
                            trace_id: string(&span["traceId"]),
                            scope: string(&scope_spans["scope"]["name"]),
                            attributes: attributes(&span["attributes"]),
                            resource: resource.clone(),
                        });
                    }
                }
            }
        }
        spans
    }

    fn fail(&self, why: &str) -> ! {
        let read = |file: &str| fs::read_to_string(self.dir.join(file)).unwrap_or_else(|e| format!("({e})"));
        panic!(
            "{why}\n--- collector.log\n{}\n--- spans.json\n{}\n(kept in {})",
            read("collector.log"),
            read("spans.json"),
            self.dir.display()
        );
    }

    /// Stops the collector and removes its directory (only on success).
    pub fn finish(mut self) {
        self.stop();
        fs::remove_dir_all(&self.dir).ok();
    }

    fn stop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

fn string(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// OTLP `KeyValue`s whose values are strings (others are left out).
fn attributes(list: &Value) -> std::collections::BTreeMap<String, String> {
    array(list)
        .iter()
        .filter_map(|kv| {
            Some((
                kv["key"].as_str()?.to_owned(),
                kv["value"]["stringValue"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// `BERTH_OTELCOL`, or the cached collector, built first by `e2e/build-otelcol.sh` when missing.
#[must_use]
pub fn collector_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BERTH_OTELCOL") {
        return path.into();
    }
    let script = crate::repo().join("e2e/build-otelcol.sh");
    eprintln!(
        "getting the OpenTelemetry Collector from {} (a first build takes minutes and needs go)",
        script.display()
    );
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed ({})",
        script.display(),
        output.status
    );
    let path = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
    eprintln!(
        "collector {} ready after {:.1?}",
        path.display(),
        started.elapsed()
    );
    path
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(crate::unique(prefix));
    fs::create_dir_all(&dir).unwrap();
    dir
}
