//! Logs and traces. Logs: `tracing` to stderr, as text for people or JSON for collectors, level from
//! `RUST_LOG` (default `info`). Traces: when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, every Check is an `authz.check` span exported over
//! OTLP/HTTP, its parent the W3C trace context Envoy sent, so it appears inside the request's trace.
//! `OTEL_SERVICE_NAME` names the service (default `portcullis`).
//!
//! The decision log (target [`DECISION_TARGET`]) is apart from the logs: JSON lines on stdout whatever
//! the log format, filtered by the same `RUST_LOG` (`portcullis::decision=off` turns it off).

use std::io::IsTerminal as _;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The tracing target of the decision log (see `decision_log`).
pub const DECISION_TARGET: &str = portcullis_core::decision_log::TARGET;

/// The decision log's output: each event on [`DECISION_TARGET`] as one JSON object per line, its fields
/// at the top level (the event carries its own `time`), written to `writer`. Other targets pass by.
pub fn decision_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .without_time()
        .with_writer(writer)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() == DECISION_TARGET
        }))
}

/// Whether spans are exported: without an exporter, Checks create no span at all (no cost per request).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keeps the trace exporter alive; dropping it flushes the spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

// === impl Telemetry ===

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber (and the trace exporter when configured). Call once, from `main`.
/// `decision_log`: write decision lines on stdout (`serve`); other commands, whose stdout is their
/// answer, drop them.
pub fn init(format: LogFormat, decision_log: bool) -> Telemetry {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let (provider, otel, problem) = match tracer_provider() {
        Ok(Some(provider)) => {
            let tracer = provider.tracer("portcullis");
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(EnvFilter::new("info"));
            (Some(provider), Some(layer), None)
        }
        Ok(None) => (None, None, None),
        Err(e) => (None, None, Some(e)),
    };
    let mut layers = log_layers(fmt, filter, decision_log.then_some(std::io::stdout));
    if let Some(otel) = otel {
        layers.push(otel.boxed());
    }
    tracing_subscriber::registry().with(layers).init();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    EXPORTING.store(provider.is_some(), std::sync::atomic::Ordering::Relaxed);
    if let Some(problem) = problem {
        tracing::warn!(error = %problem, "OTLP trace export not started; continuing without traces");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    Telemetry { provider }
}

/// A subscriber layer, boxed.
type BoxedLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The log layers: `fmt` for everything but decisions, and the decision log on `decisions` when given,
/// each behind a `filter`.
///
/// A `Vec` of boxed layers, never `Option` layers: an absent `Option` layer answers
/// `Interest::always` for every callsite, which kept every trace-level span of h2 and hyper alive in the
/// registry and cost a third of the server's CPU per Check.
fn log_layers<W>(
    fmt: BoxedLayer,
    filter: impl Fn() -> EnvFilter,
    decisions: Option<W>,
) -> Vec<BoxedLayer>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let not_decisions = tracing_subscriber::filter::filter_fn(|m| m.target() != DECISION_TARGET);
    let mut layers = vec![fmt.with_filter(filter().and(not_decisions)).boxed()];
    if let Some(writer) = decisions {
        layers.push(decision_layer(writer).with_filter(filter()).boxed());
    }
    layers
}

fn tracer_provider() -> Result<Option<SdkTracerProvider>, String> {
    let wanted = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    if !wanted {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| e.to_string())?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "portcullis".to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

/// The span of one Check arriving over `transport` (`grpc`, `http`: the `authz.transport` field), a child
/// of the trace context `lookup` finds (Envoy's gRPC metadata, else the request's own headers). Fields `authz.decision`, `authz.reason`, `authz.route` and `authz.decision_id`
/// are recorded when the decision is known.
pub fn check_span<'a>(
    transport: &'static str,
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> tracing::Span {
    if !EXPORTING.load(std::sync::atomic::Ordering::Relaxed) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "authz.check",
        otel.name = "ext_authz Check",
        otel.kind = "server",
        authz.transport = transport,
        authz.decision = tracing::field::Empty,
        authz.reason = tracing::field::Empty,
        authz.route = tracing::field::Empty,
        authz.decision_id = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let carrier: std::collections::HashMap<String, String> = ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|k| lookup(k).map(|v| (k.to_owned(), v.to_owned())))
            .collect();
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
        let _ = span.set_parent(parent);
    }
    span
}

/// The W3C trace id of a check: its span's (when traces are exported, a child of the caller's context or
/// a new trace), else the caller's `traceparent`'s. Empty when there is none. Log lines and the decision
/// log carry it as `trace.id`, so a line can be found from a trace and the other way round.
pub fn trace_id<'a>(
    span: &tracing::Span,
    traceparent: Option<&'a str>,
) -> std::borrow::Cow<'a, str> {
    use opentelemetry::trace::TraceContextExt as _;
    if EXPORTING.load(std::sync::atomic::Ordering::Relaxed) && !span.is_disabled() {
        let id = span.context().span().span_context().trace_id();
        if id != opentelemetry::trace::TraceId::INVALID {
            return std::borrow::Cow::Owned(id.to_string());
        }
    }
    traceparent
        .and_then(traceparent_id)
        .map_or(std::borrow::Cow::Borrowed(""), std::borrow::Cow::Borrowed)
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if it is well formed.
pub fn traceparent_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
        .then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt as _;
    use opentelemetry_sdk::trace::InMemorySpanExporter;

    #[test]
    fn the_trace_id_is_read_from_a_well_formed_traceparent_only() {
        assert_eq!(
            traceparent_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(traceparent_id("00-xyz-00f067aa0ba902b7-01"), None);
        assert_eq!(
            traceparent_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(traceparent_id(""), None);
    }

    /// Callsite interest is process-wide: tests that install subscribers take turns.
    static SUBSCRIBERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn callsites_below_the_log_level_stay_disabled() {
        let _turn = SUBSCRIBERS.lock().unwrap_or_else(|e| e.into_inner());
        for decisions in [false, true] {
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .boxed();
            let layers = log_layers(
                fmt,
                || EnvFilter::new("info"),
                decisions.then_some(std::io::sink),
            );
            let subscriber = tracing_subscriber::registry().with(layers);
            tracing::subscriber::with_default(subscriber, || {
                // What h2 and hyper create on every poll: must cost nothing at the default level.
                let span = tracing::trace_span!(target: "h2::proto", "poll");
                assert!(span.is_disabled(), "decision log {decisions}");
                assert!(tracing::debug_span!(target: "hyper", "conn").is_disabled());
                assert!(!tracing::enabled!(target: "h2::codec", tracing::Level::TRACE));
                assert!(tracing::enabled!(tracing::Level::INFO));
                assert_eq!(
                    tracing::enabled!(target: "portcullis::decision", tracing::Level::INFO),
                    decisions
                );
            });
        }
    }

    #[test]
    fn a_check_span_joins_envoys_trace_and_carries_the_decision() {
        let _turn = SUBSCRIBERS.lock().unwrap_or_else(|e| e.into_inner());
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let headers = [(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )];
            let span = check_span("grpc", |k| {
                headers.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
            });
            span.record("authz.decision", "deny");
            span.record("authz.route", "admin");
            let trace_id = span.context().span().span_context().trace_id();
            assert_eq!(trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
            // Log lines carry the span's trace id; without a caller's context, a new trace's.
            assert_eq!(
                super::trace_id(&span, None),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            let root = check_span("grpc", |_| None);
            let own = super::trace_id(&root, None);
            assert_eq!(own.len(), 32, "{own}");
            assert_ne!(own, "4bf92f3577b34da6a3ce929d0e0e4736");
            drop(span);
        });
        // Traces off: the caller's traceparent still names the trace.
        EXPORTING.store(false, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            super::trace_id(
                &tracing::Span::none(),
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            ),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(super::trace_id(&tracing::Span::none(), None), "");
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        let spans = exporter.get_finished_spans().unwrap();
        // Envoy's check, and the one without a caller's context.
        assert_eq!(spans.len(), 2);
        let span = spans
            .iter()
            .find(|s| s.parent_span_id.to_string() == "00f067aa0ba902b7")
            .unwrap();
        assert_eq!(span.name, "ext_authz Check");
        assert_eq!(
            span.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
        let attr = |key: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attr("authz.decision").as_deref(), Some("deny"));
        assert_eq!(attr("authz.route").as_deref(), Some("admin"));
        assert_eq!(attr("authz.transport").as_deref(), Some("grpc"));
    }
}
