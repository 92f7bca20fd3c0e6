//! Log formats, and the subscriber that writes logs in one of them.

use std::fmt;
use std::str::FromStr;

use opentelemetry_sdk::trace::SdkTracer;
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt as _};

use crate::otel;

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

/// The whole subscriber: filter, then the OpenTelemetry layer (only with a tracer), then the log
/// formatter. A span's `trace_id` is an ordinary field (see [`crate::record_trace_id`]), so both formats
/// print it with the span; JSON keeps span fields in the `spans` list, not at the top level.
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
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(tracer.map(otel::layer));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let logs: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Text => logs.boxed(),
        // Every enclosing span, not just the innermost: the trace id sits on `reconcile`, and lines
        // inside its child spans must carry it too.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .boxed(),
    };
    registry.with(logs)
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
            let span = tracing::info_span!(
                "reconcile",
                kind = "Customer",
                object = "t-1",
                trace_id = tracing::field::Empty,
            );
            crate::record_trace_id(&span);
            let _entered = span.enter();
            tracing::info!(step = "build", "inside");
            tracing::info_span!("apply").in_scope(|| tracing::warn!("nested"));
            current_trace_id()
        });
        (captured.lines(), trace_id)
    }

    #[test]
    fn traced_text_lines_carry_the_trace_id_with_the_reconcile_span() {
        let (lines, trace_id) = log(LogFormat::Text, true);
        let trace_id = trace_id.expect("a trace id inside the span");
        assert_eq!(trace_id.len(), 32, "{trace_id}");
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(!lines[0].contains("trace_id"), "{}", lines[0]);
        assert!(!lines[0].contains('\x1b'), "no ANSI when off: {}", lines[0]);
        let span = format!("reconcile{{kind=\"Customer\" object=\"t-1\" trace_id={trace_id}}}:");
        assert!(lines[1].contains(&span), "{}", lines[1]);
        assert!(lines[2].contains(&format!("{span}apply:")), "{}", lines[2]);
    }

    #[test]
    fn traced_json_lines_carry_the_trace_id_in_the_reconcile_span() {
        let (lines, trace_id) = log(LogFormat::Json, true);
        let trace_id = trace_id.expect("a trace id inside the span");
        let lines: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert_eq!(lines[0]["message"], "outside");
        assert!(lines[0].get("spans").is_none(), "{}", lines[0]);
        assert_eq!(
            lines[1]["step"], "build",
            "event fields are flattened: {}",
            lines[1]
        );
        for line in &lines[1..] {
            let reconcile = &line["spans"][0];
            assert_eq!(reconcile["name"], "reconcile", "{line}");
            assert_eq!(reconcile["object"], "t-1", "{line}");
            assert_eq!(reconcile["trace_id"], trace_id.as_str(), "{line}");
            assert!(
                line.get("trace_id").is_none(),
                "span fields stay in `spans`: {line}"
            );
        }
        assert_eq!(lines[2]["spans"][1]["name"], "apply", "{}", lines[2]);
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
}
