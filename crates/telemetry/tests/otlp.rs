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
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_e2e::otel::{Collector, collector_binary};
use serde_json::Value;

const EMIT_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

#[test]
fn spans_reach_a_real_collector_with_the_logged_trace_id() {
    let collector = Collector::start(&collector_binary());
    let name = unique("cust");

    let run = emit(&collector.dir, Some(&collector.endpoint()), &name, "json", &[]);
    let span = collector.wait_for_span("reconcile", "name", &name);
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
        assert_eq!(line["spans"][0]["trace_id"], span.trace_id.as_str(), "{line}");
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
    let span = collector.wait_for_span("reconcile", "name", &other);
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
