//! The module's side of the engine's seams: the process's files and environment variables (secrets,
//! `jwks_file`, `keys_file`, a `config_file`; the server's own, from `portcullis-io`), and where the
//! module's own messages go (Envoy's log), the decision log included ([`DecisionLines`]).

pub use portcullis_io::{sources, ProcessFiles};

/// The levels of Envoy's log the module writes at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Where [`log`] writes: Envoy's log once the ABI layer has found its callbacks at program init (it
/// registers itself here, so this module never imports it); stderr until then and in tests.
static LOG: std::sync::OnceLock<fn(Level, &str)> = std::sync::OnceLock::new();

/// Sends the module's messages to `writer` from now on (the ABI layer's Envoy log; set once).
pub fn set_log(writer: fn(Level, &str)) {
    let _ = LOG.set(writer);
}

/// Writes `message` to Envoy's log (component `dynamic_modules`). Never pass a token or a secret.
pub fn log(level: Level, message: &str) {
    match LOG.get() {
        Some(writer) => writer(level, message),
        None => eprintln!("{level:?}: {message}"),
    }
}

/// The decision log in Envoy's log: a `tracing` subscriber that takes only core's decision events
/// (target `portcullis::decision`) and writes each as one JSON line at `info`, with the fields and
/// names of the server's decision log (`{"level":"INFO","time":…,"authz.decision_id":…,…,
/// "target":"portcullis::decision"}`). Every other event and span is ignored.
pub struct DecisionLines;

/// Makes [`DecisionLines`] the process's subscriber (once; false when one was already set).
pub fn install_decision_log() -> bool {
    tracing::subscriber::set_global_default(DecisionLines).is_ok()
}

/// One event's fields as JSON members, in the order they were recorded.
struct Members(String);

impl Members {
    fn push(&mut self, name: &str, value: &str) {
        // A string key and value: serde_json escapes them (it cannot fail on a &str).
        let key = serde_json::to_string(name).unwrap_or_default();
        let value = serde_json::to_string(value).unwrap_or_default();
        self.0.push(',');
        self.0.push_str(&key);
        self.0.push(':');
        self.0.push_str(&value);
    }
}

impl tracing::field::Visit for Members {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.push(field.name(), value);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.push(field.name(), &format!("{value:?}"));
    }
}

impl tracing::Subscriber for DecisionLines {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == portcullis_core::decision_log::TARGET
    }

    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if self.enabled(metadata) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut members = Members(String::from(r#"{"level":"INFO""#));
        event.record(&mut members);
        members.push("target", event.metadata().target());
        members.0.push('}');
        log(Level::Info, &members.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn capture(_: Level, line: &str) {
        LINES.lock().unwrap().push(line.to_owned());
    }

    /// The lines of the decision log this test's thread wrote.
    fn decision_lines(marker: &str) -> Vec<String> {
        LINES
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(marker))
            .cloned()
            .collect()
    }

    #[test]
    fn a_decision_becomes_one_json_line_in_envoys_log_and_nothing_else_does() {
        set_log(capture);
        tracing::subscriber::with_default(DecisionLines, || {
            tracing::info!(
                target: "portcullis::decision",
                time = %"2026-12-08T00:00:00Z",
                authz.decision = "deny",
                request.id = "marker-\"1\"",
            );
            tracing::info!(target: "portcullis::other", marker = "marker-\"1\"");
        });
        assert_eq!(
            decision_lines("marker-"),
            [
                r#"{"level":"INFO","time":"2026-12-08T00:00:00Z","authz.decision":"deny","request.id":"marker-\"1\"","target":"portcullis::decision"}"#
            ]
        );

        // Through the engine: a denial decided by the filter is logged with its reason.
        let config = portcullis_core::Config::from_yaml_str(
            "providers: [{name: keys, type: api_key, credential: {header: x-api-key}, keys: [{sha256: abababababababababababababababababababababababababababababababab, principal: ci}]}]",
        )
        .unwrap();
        let env = portcullis_core::Env::offline(
            portcullis_core::Clock::manual(1_700_000_000),
            portcullis_core::config::MemoryFiles::default(),
        );
        let runtime = portcullis_core::Runtime::build(&config, &env).unwrap();
        let view = portcullis_core::RequestView::new(
            "GET",
            "/data",
            "api.example",
            portcullis_core::Headers::Pairs(&[]),
            "marker-engine",
        );
        tracing::subscriber::with_default(DecisionLines, || {
            use futures_util::FutureExt as _;
            let verdict = runtime
                .decide(&view, false)
                .now_or_never()
                .expect("an API key decision completes inline");
            runtime.decision_log().record(
                &verdict,
                &view,
                &portcullis_core::decision_log::Origin::default(),
            );
        });
        let lines = decision_lines("marker-engine");
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["authz.decision"], "deny");
        assert_eq!(line["authz.reason"], "missing_credential");
        assert_eq!(line["target"], "portcullis::decision");
    }
}
