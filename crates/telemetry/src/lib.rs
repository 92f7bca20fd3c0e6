//! Logging and tracing for berth.
//!
//! [`Telemetry::init`] installs one global `tracing` subscriber:
//! - a `RUST_LOG`-style filter (default [`DEFAULT_FILTER`]);
//! - logs on stderr, [`LogFormat::Text`] for people (ANSI colours only on a terminal) or
//!   [`LogFormat::Json`] for log pipelines;
//! - when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, an
//!   OpenTelemetry layer exporting spans over OTLP/HTTP (protobuf), with `service.name` `berth`
//!   (`OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` override it) and `service.version`. A span that
//!   declares an empty `trace_id` field and is passed to [`record_trace_id`] then shows the trace id on
//!   every log line inside it, as one of its fields.
//!
//! The standard `OTEL_*` variables (headers, timeout, sampler, batch settings) are honoured by the
//! OpenTelemetry SDK itself. Keep the returned [`Telemetry`] alive and call [`Telemetry::shutdown`] on
//! the way out so the last spans are flushed.

mod format;
mod otel;

use std::io::IsTerminal as _;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use format::{LogFormat, ParseLogFormatError};
pub use otel::{current_trace_id, record_trace_id};

/// The filter used when `RUST_LOG` is unset or empty.
pub const DEFAULT_FILTER: &str = "info,kube=warn";

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid RUST_LOG filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("unsupported OTLP protocol {0:?}: berth exports over http/protobuf only")]
    Protocol(String),
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("a global tracing subscriber or logger is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// Guard of the global subscriber: flushes and shuts down span export when shut down or dropped.
#[must_use = "dropping Telemetry shuts down span export at once"]
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global tracing subscriber (see the crate docs). Fails if `RUST_LOG` does not parse,
    /// the OTLP exporter cannot be built, or a global subscriber is already installed.
    pub fn init(format: LogFormat) -> Result<Self, Error> {
        let filter = env_filter(std::env::var("RUST_LOG").ok().as_deref())?;
        let provider = if otel::configured() {
            Some(otel::provider()?)
        } else {
            None
        };
        let tracer = provider.as_ref().map(otel::tracer);
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        format::subscriber(format, filter, ansi, std::io::stderr, tracer).try_init()?;
        if provider.is_some() {
            otel::install_propagator();
        }
        Ok(Self { provider })
    }

    /// Whether spans are exported (an OTLP endpoint is configured).
    #[must_use]
    pub fn exports_spans(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes the spans still buffered and shuts down the tracer provider. Logging goes on.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take() {
            otel::shutdown(&provider);
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `RUST_LOG` when set and not blank, else [`DEFAULT_FILTER`].
fn env_filter(rust_log: Option<&str>) -> Result<EnvFilter, Error> {
    let directives = rust_log
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_FILTER);
    Ok(EnvFilter::builder().parse(directives)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_defaults_when_rust_log_is_unset_or_blank() {
        for unset in [None, Some(""), Some("  ")] {
            let filter = env_filter(unset).unwrap();
            assert_eq!(filter.to_string(), "kube=warn,info", "{unset:?}");
        }
    }

    #[test]
    fn filter_takes_rust_log_and_rejects_garbage() {
        assert_eq!(
            env_filter(Some("debug,hyper=off")).unwrap().to_string(),
            "hyper=off,debug"
        );
        assert!(matches!(
            env_filter(Some("info,kube=loud")),
            Err(Error::Filter(_))
        ));
    }
}
