//! Log formats, and the event formatter that appends the trace id to each line inside a traced span.

use std::fmt;
use std::str::FromStr;

use opentelemetry_sdk::trace::SdkTracer;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{self as fmt_format, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::layer::{Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

use crate::otel::{self, TraceId};

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// One human-readable line per event; coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line, event fields at the top level.
    Json,
}

impl LogFormat {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A log format other than `text` or `json`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format {0:?}: expected \"text\" or \"json\"")]
pub struct ParseLogFormatError(String);

impl FromStr for LogFormat {
    type Err = ParseLogFormatError;

    /// `text` or `json`, ignoring ASCII case and surrounding blanks.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            t if t.eq_ignore_ascii_case("text") => Ok(Self::Text),
            t if t.eq_ignore_ascii_case("json") => Ok(Self::Json),
            _ => Err(ParseLogFormatError(s.to_owned())),
        }
    }
}

/// The whole subscriber: filter, then the OpenTelemetry layer and the trace-id recorder (both active
/// only with a tracer), then the log formatter. Layers see events in that order, so the trace id is recorded on the
/// span before the formatter looks for it.
pub(crate) fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
    tracer: Option<SdkTracer>,
) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let trace_ids = otel::TraceIdLayer::new(tracer.is_some());
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(tracer.map(otel::layer))
        .with(trace_ids);
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let logs: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Text => logs
            .event_format(WithTraceId {
                inner: fmt_format().with_ansi(ansi),
                style: format,
            })
            .boxed(),
        LogFormat::Json => logs
            .fmt_fields(fmt_format::JsonFields::new())
            .event_format(WithTraceId {
                inner: fmt_format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true),
                style: format,
            })
            .boxed(),
    };
    registry.with(logs)
}

fn fmt_format() -> fmt_format::Format {
    fmt_format::Format::default()
}

/// Formats with `inner`, then appends `trace_id` when the event is inside a span that has one.
struct WithTraceId<F> {
    inner: F,
    style: LogFormat,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let trace_id = ctx.event_scope().and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<TraceId>().cloned())
        });
        let Some(TraceId(trace_id)) = trace_id else {
            return self.inner.format_event(ctx, writer, event);
        };
        // The inner formatter ends the line itself; format into a buffer to add the field before that.
        // ANSI is decided by the inner `Format`, not by this buffer's writer.
        let mut line = String::with_capacity(256);
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&with_trace_id(line, &trace_id, self.style))
    }
}

/// Adds `trace_id` to one formatted line: ` trace_id=…` at the end of a text line, a last member of a
/// JSON object. A line of unexpected shape is returned unchanged.
fn with_trace_id(mut line: String, trace_id: &str, style: LogFormat) -> String {
    let body_end = line.trim_end_matches(['\n', '\r']).len();
    let insert_at = match style {
        LogFormat::Text => Some((body_end, format!(" trace_id={trace_id}"))),
        LogFormat::Json => line[..body_end]
            .strip_suffix('}')
            .map(|object| (object.len(), format!(",\"trace_id\":\"{trace_id}\""))),
    };
    if let Some((at, field)) = insert_at {
        line.insert_str(at, &field);
    }
    line
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;
    use crate::current_trace_id;

    /// Log lines written by a test subscriber.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Self;
        fn make_writer(&'w self) -> Self {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    /// Logs one line outside and two inside a `reconcile` span (the second in a child span) with `format`,
    /// traced by an in-memory tracer when `traced`; returns the lines and `current_trace_id()` in the span.
    fn log(format: LogFormat, traced: bool) -> (Vec<String>, Option<String>) {
        let provider = SdkTracerProvider::builder().build();
        let captured = Captured::default();
        let tracer = traced.then(|| crate::otel::tracer(&provider));
        let subscriber = subscriber(format, EnvFilter::new("info"), false, captured.clone(), tracer);
        let trace_id = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let span = tracing::info_span!("reconcile", kind = "Customer", object = "t-1");
            let _entered = span.enter();
            tracing::info!(step = "build", "inside");
            tracing::info_span!("apply").in_scope(|| tracing::warn!("nested"));
            current_trace_id()
        });
        (captured.lines(), trace_id)
    }

    #[test]
    fn traced_text_lines_inside_spans_end_with_the_trace_id() {
        let (lines, trace_id) = log(LogFormat::Text, true);
        let trace_id = trace_id.expect("a trace id inside the span");
        assert_eq!(trace_id.len(), 32, "{trace_id}");
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(!lines[0].contains("trace_id"), "{}", lines[0]);
        assert!(!lines[0].contains('\x1b'), "no ANSI when off: {}", lines[0]);
        assert!(
            lines[1].contains("reconcile{kind=\"Customer\" object=\"t-1\"}"),
            "{}",
            lines[1]
        );
        for line in &lines[1..] {
            assert!(line.ends_with(&format!(" trace_id={trace_id}")), "{line}");
        }
    }

    #[test]
    fn traced_json_lines_inside_spans_have_a_trace_id_member() {
        let (lines, trace_id) = log(LogFormat::Json, true);
        let trace_id = trace_id.expect("a trace id inside the span");
        let lines: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert_eq!(lines[0]["message"], "outside");
        assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
        assert_eq!(
            lines[1]["step"], "build",
            "event fields are flattened: {}",
            lines[1]
        );
        assert_eq!(lines[1]["spans"][0]["object"], "t-1", "{}", lines[1]);
        for line in &lines[1..] {
            assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
        }
    }

    #[test]
    fn untraced_lines_have_no_trace_id() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let (lines, trace_id) = log(format, false);
            assert_eq!(trace_id, None);
            assert_eq!(lines.len(), 3, "{lines:#?}");
            assert!(lines.iter().all(|l| !l.contains("trace_id")), "{lines:#?}");
        }
    }

    #[test]
    fn log_format_parses_text_and_json() {
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!(" JSON ".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("Text".parse::<LogFormat>(), Ok(LogFormat::Text));
    }

    #[test]
    fn log_format_rejects_others_and_names_them() {
        for bad in ["", "yaml", "logfmt", "jsonl", "text,json"] {
            let err = bad.parse::<LogFormat>().unwrap_err();
            assert_eq!(err, ParseLogFormatError(bad.to_owned()));
            assert!(err.to_string().contains("expected \"text\" or \"json\""), "{err}");
        }
    }

    #[test]
    fn log_format_round_trips_through_display() {
        for format in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(format.to_string().parse::<LogFormat>(), Ok(format));
        }
        assert_eq!(LogFormat::default(), LogFormat::Text);
    }

    #[test]
    fn trace_id_is_appended_to_text_and_json_lines() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            with_trace_id("t INFO reconcile{name=a}: x: done\n".into(), id, LogFormat::Text),
            format!("t INFO reconcile{{name=a}}: x: done trace_id={id}\n")
        );
        let json = with_trace_id(
            "{\"level\":\"INFO\",\"message\":\"done\"}\n".into(),
            id,
            LogFormat::Json,
        );
        assert_eq!(
            json,
            format!("{{\"level\":\"INFO\",\"message\":\"done\",\"trace_id\":\"{id}\"}}\n")
        );
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["trace_id"], id);
        // Not an object: left alone rather than corrupted.
        assert_eq!(with_trace_id("oops\n".into(), id, LogFormat::Json), "oops\n");
    }
}
