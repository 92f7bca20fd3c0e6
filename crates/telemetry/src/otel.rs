//! OpenTelemetry: the OTLP/HTTP span exporter, the tracer provider, and trace ids for log lines.

use std::time::Duration;

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{InstrumentationScope, Key, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::level_filters::LevelFilter;
use tracing::{Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::Error;

/// `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` name another.
const SERVICE_NAME: &str = "berth";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// How long shutdown waits for the last batch to reach the collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Crates the exporter itself runs on: their spans would be exported by the export they describe.
const EXPORT_INTERNALS: [&str; 6] = ["h2", "hyper", "reqwest", "rustls", "tower", "opentelemetry"];

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Spans are exported when an OTLP endpoint is set, unless `OTEL_SDK_DISABLED=true`.
pub(crate) fn configured() -> bool {
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled
        && (env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some())
}

/// The tracer provider: a batch processor (its own thread) feeding the OTLP/HTTP exporter. The endpoint,
/// headers and timeout come from the standard `OTEL_EXPORTER_OTLP_*` variables.
pub(crate) fn provider() -> Result<SdkTracerProvider, Error> {
    let protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
    if let Some(protocol) = protocol.filter(|p| p != "http/protobuf") {
        return Err(Error::Protocol(protocol));
    }
    // reqwest's rustls needs a process-wide crypto provider; ring is the one kube uses. Already
    // installed (by kube or the application) is fine.
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build())
}

/// The SDK's detected resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, telemetry.sdk.*) with
/// berth's name when none was given, and the crate version.
fn resource() -> Resource {
    let service_name = Key::from_static_str("service.name");
    let named = Resource::builder()
        .build()
        .get(&service_name)
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let builder = Resource::builder().with_attribute(KeyValue::new("service.version", VERSION));
    if named {
        builder
    } else {
        builder.with_service_name(SERVICE_NAME)
    }
    .build()
}

pub(crate) fn tracer(provider: &SdkTracerProvider) -> SdkTracer {
    provider.tracer_with_scope(
        InstrumentationScope::builder(SERVICE_NAME)
            .with_version(VERSION)
            .build(),
    )
}

/// The `tracing` → OpenTelemetry layer, blind to the exporter's own crates.
pub(crate) fn layer<S>(tracer: SdkTracer) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let not_exporter = EXPORT_INTERNALS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |targets, target| targets.with_target(*target, LevelFilter::OFF),
    );
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(not_exporter)
}

/// Makes W3C trace context the global propagator, for code that injects or extracts trace context.
/// (The provider is not made global: spans come from `tracing`, and its "set" log line is noise.)
pub(crate) fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// Flushes and shuts the provider down. It blocks until the batch thread is done, so inside a
/// multi-threaded tokio runtime it tells the runtime first.
pub(crate) fn shutdown(provider: &SdkTracerProvider) {
    let shut = || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
    let result = match tokio::runtime::Handle::try_current() {
        Ok(rt) if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(shut)
        }
        _ => shut(),
    };
    if let Err(error) = result {
        tracing::warn!(%error, "flushing spans on shutdown failed");
    }
}

/// The current span's trace id as 32 lowercase hex digits, if OpenTelemetry is on (and the span is
/// traced). For error messages and tests; log lines get it from [`record_trace_id`].
#[must_use]
pub fn current_trace_id() -> Option<String> {
    trace_id(&Span::current())
}

/// Fills the span's `trace_id` field, which it must declare empty (`trace_id = tracing::field::Empty`),
/// so that both log formats print the id with the span's other fields on every line inside it. Without
/// OpenTelemetry the field stays empty, and neither format prints an empty field.
///
/// Looking the id up starts the OpenTelemetry span: call it after any remote parent is set.
pub fn record_trace_id(span: &Span) {
    if let Some(id) = trace_id(span) {
        // As `Display`: the text format would quote a `&str`, and `trace_id=<id>` is what people grep for.
        span.record("trace_id", tracing::field::display(id));
    }
}

fn trace_id(span: &Span) -> Option<String> {
    let cx = span.context();
    let otel_span = cx.span();
    let span_context = otel_span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}
