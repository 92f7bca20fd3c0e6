//! Emits one `reconcile` span through berth-telemetry and shuts down, as the operator does.
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 cargo run -p berth-telemetry --example emit -- cust-1 json
//! ```
//!
//! Arguments: the object name (default `example`) and the log format (default `text`). Prints the trace
//! id on stdout (empty without OpenTelemetry); the child process of `tests/otlp.rs`.

use std::process::ExitCode;

use berth_telemetry::{LogFormat, Telemetry, current_trace_id, record_trace_id};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "example".to_owned());
    let format = match args.next().map(|f| f.parse::<LogFormat>()).transpose() {
        Ok(format) => format.unwrap_or_default(),
        Err(e) => {
            eprintln!("emit: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = match Telemetry::init(format) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("emit: cannot set up telemetry: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(exports_spans = telemetry.exports_spans(), "starting");
    let trace_id = reconcile(&name).await;
    println!("{}", trace_id.unwrap_or_default());
    telemetry.shutdown();
    ExitCode::SUCCESS
}

#[tracing::instrument(
    name = "reconcile",
    fields(kind = "Customer", name = %name, trace_id = tracing::field::Empty)
)]
async fn reconcile(name: &str) -> Option<String> {
    record_trace_id(&tracing::Span::current());
    tracing::info!("reconciling");
    tokio::task::yield_now().await;
    tracing::info!(ready = true, "reconciled");
    current_trace_id()
}
