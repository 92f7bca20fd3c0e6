//! Spans reach a real OTLP receiver: an OpenTelemetry Collector built from the Go module proxy by
//! `e2e/build-otelcol.sh` (once, into `${BERTH_CACHE:-~/.cache/berth}`; the first build takes minutes and
//! needs `go`). `BERTH_OTELCOL=/path/to/otelcol` uses that binary instead.
//!
//! The subscriber is process-global, so the code under test runs in a child process: the `emit` example
//! (built by `cargo test`), which inits telemetry, emits a `reconcile` span and shuts down. The collector
//! receives OTLP/HTTP on a free loopback port and writes what it receives as JSON with its file exporter.

// A test crate whose helpers fail loudly by design; clippy.toml's allow-*-in-tests covers `#[test]`
// functions only, not the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const COLLECTOR_START: Duration = Duration::from_secs(60);
const EMIT_TIMEOUT: Duration = Duration::from_secs(60);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

#[test]
fn spans_reach_a_real_collector_with_the_logged_trace_id() {
    let collector = Collector::start(&collector_binary());
    let name = unique("cust");

    let run = emit(&collector.dir, Some(&collector.endpoint()), &name, "json", &[]);
    let span = collector.wait_for_span(&name);
    assert_eq!(span.name, "reconcile", "{span:#?}");
    assert_eq!(
        span.attributes.get("kind").map(String::as_str),
        Some("Customer"),
        "{span:#?}"
    );
    assert_eq!(
        span.resource.get("service.name").map(String::as_str),
        Some("berth"),
        "{span:#?}"
    );
    assert_eq!(
        span.resource.get("service.version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION")),
        "{span:#?}"
    );
    assert_eq!(span.scope, "berth", "{span:#?}");
    // The trace id the program saw (current_trace_id) is the exported one, and on each log line in the span.
    assert_eq!(run.trace_id, span.trace_id, "stdout of emit vs exported span");
    let in_span: Vec<Value> = run
        .stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["spans"].is_array())
        .collect();
    assert_eq!(
        in_span.len(),
        2,
        "two JSON log lines inside the span:\n{}",
        run.stderr
    );
    for line in &in_span {
        assert_eq!(line["trace_id"], span.trace_id.as_str(), "{line}");
    }

    // OTEL_SERVICE_NAME overrides the service name; text logs carry the trace id too.
    let other = unique("cust");
    let run = emit(
        &collector.dir,
        Some(&collector.endpoint()),
        &other,
        "text",
        &[("OTEL_SERVICE_NAME", "berth-e2e")],
    );
    let span = collector.wait_for_span(&other);
    assert_eq!(
        span.resource.get("service.name").map(String::as_str),
        Some("berth-e2e"),
        "{span:#?}"
    );
    assert_eq!(run.trace_id, span.trace_id);
    let marker = format!("trace_id={}", span.trace_id);
    let traced = run.stderr.lines().filter(|line| line.contains(&marker)).count();
    assert_eq!(
        traced, 2,
        "two text log lines inside the span carry {marker}:\n{}",
        run.stderr
    );

    collector.finish();
}

#[test]
fn without_an_endpoint_nothing_is_traced() {
    let dir = temp_dir("berth-otlp-off");
    let run = emit(&dir, None, "cust-off", "json", &[]);
    assert_eq!(run.trace_id, "", "no trace id without OpenTelemetry");
    assert!(!run.stderr.contains("trace_id"), "{}", run.stderr);
    assert!(run.stderr.contains("\"exports_spans\":false"), "{}", run.stderr);
    fs::remove_dir_all(&dir).ok();
}

/// One exported span, flattened out of the collector's `ExportTraceServiceRequest` JSON.
#[derive(Debug)]
struct ExportedSpan {
    name: String,
    trace_id: String,
    scope: String,
    attributes: std::collections::BTreeMap<String, String>,
    resource: std::collections::BTreeMap<String, String>,
}

/// A running collector; killed on drop. Its directory (config, log, exported spans) is kept when the test
/// fails, and named in the failure.
struct Collector {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Collector {
    fn start(binary: &Path) -> Self {
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

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until the collector has written the `reconcile` span whose `name` attribute is `name`.
    fn wait_for_span(&self, name: &str) -> ExportedSpan {
        let deadline = Instant::now() + EXPORT_TIMEOUT;
        loop {
            let found = self.spans().into_iter().find(|span| {
                span.name == "reconcile" && span.attributes.get("name").is_some_and(|n| n == name)
            });
            if let Some(span) = found {
                return span;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "no reconcile span with name={name} exported within {EXPORT_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    fn spans(&self) -> Vec<ExportedSpan> {
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
    fn finish(mut self) {
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

/// What one run of the `emit` example printed: the trace id (stdout) and its logs (stderr).
struct Emitted {
    trace_id: String,
    stderr: String,
}

/// Runs `emit NAME FORMAT` with a clean OpenTelemetry environment plus `envs`, exporting to `endpoint`.
fn emit(dir: &Path, endpoint: Option<&str>, name: &str, format: &str, envs: &[(&str, &str)]) -> Emitted {
    let binary = emit_binary();
    let (out, err) = (
        dir.join(format!("emit-{name}.out")),
        dir.join(format!("emit-{name}.err")),
    );
    let mut command = Command::new(&binary);
    command
        .args([name, format])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap());
    for (key, _) in std::env::vars_os() {
        if key
            .to_str()
            .is_some_and(|k| k.starts_with("OTEL_") || k == "RUST_LOG" || k == "NO_COLOR")
        {
            command.env_remove(key);
        }
    }
    if let Some(endpoint) = endpoint {
        command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
        // Fail fast rather than retry for long if the collector is not there.
        command.env("OTEL_EXPORTER_OTLP_TIMEOUT", "5000");
    }
    command.envs(envs.iter().copied());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    let deadline = Instant::now() + EMIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "emit {name} still running after {EMIT_TIMEOUT:?}:\n{}",
                fs::read_to_string(&err).unwrap()
            );
        }
        std::thread::sleep(POLL);
    };
    let stderr = fs::read_to_string(&err).unwrap();
    assert!(status.success(), "emit {name} failed ({status}):\n{stderr}");
    Emitted {
        trace_id: fs::read_to_string(&out).unwrap().trim().to_owned(),
        stderr,
    }
}

/// The `emit` example: `cargo test` builds examples into `target/<profile>/examples`, beside the `deps`
/// directory this test binary runs from.
fn emit_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile
        .join("examples")
        .join(format!("emit{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} is missing: run the whole `cargo test -p berth-telemetry` (it builds examples) or \
         `cargo build -p berth-telemetry --example emit` first",
        binary.display()
    );
    binary
}

/// `BERTH_OTELCOL`, or the cached collector, built first by `e2e/build-otelcol.sh` when missing.
fn collector_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BERTH_OTELCOL") {
        return path.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e/build-otelcol.sh");
    eprintln!(
        "otlp test: getting the OpenTelemetry Collector from {} (a first build takes minutes and needs go)",
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
        "otlp test: collector {} ready after {:.1?}",
        path.display(),
        started.elapsed()
    );
    path
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    fs::create_dir_all(&dir).unwrap();
    dir
}
