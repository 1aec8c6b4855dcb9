//! One check, whatever the transport: [`check`] takes our request view, asks the runtime, records the
//! metrics, the trace span's fields, the log line and the decision log, and hands the answer to the
//! transport's writer. The gRPC `Check` method (`server/grpc.rs`) and the HTTP forward-auth listener
//! (`server/http.rs`) both call it, so there is one decision path. Admission (`server.max_concurrent_checks`)
//! is taken by each transport before it reads the request, so an overloaded server answers at once.

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument as _;

use super::App;
use crate::answer::Answer;
use crate::authorizer::Verdict;
use crate::decision::Decision;
use crate::metrics::Transport;
use crate::request::RequestView;
use crate::runtime::Runtime;

/// How a check arrived: its transport, the client's address and port as the proxy saw it, and when.
pub struct Arrival<'a> {
    pub transport: Transport,
    pub source: (&'a str, u32),
    pub started: Instant,
}

/// Decides one request on `runtime` (the one the transport loaded: a check finishes on the runtime it
/// started with) and writes its answer with `write`: the verdict, the metrics under
/// the arrival's `transport` (`portcullis_checks_total`, the duration since `started`), the `authz.check` span (a child
/// of the trace context `trace` finds) with the decision's fields, the log line and the decision log
/// (with the arrival's `source`). Every transport goes through here.
pub async fn check<'v, T>(
    app: &App,
    runtime: Arc<Runtime>,
    arrival: Arrival<'_>,
    view: &RequestView<'v>,
    trace: impl Fn(&str) -> Option<&'v str>,
    write: impl FnOnce(Answer<'_>) -> T,
) -> T {
    let Arrival {
        transport,
        source,
        started,
    } = arrival;
    let span = crate::telemetry::check_span(transport.as_str(), &trace);
    let explain = runtime.allow_explain()
        && view
            .headers
            .get(EXPLAIN_HEADER)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let verdict = runtime
        .authorizer()
        .decide(view, explain)
        .instrument(span.clone())
        .await;
    app.metrics().record(
        transport,
        &verdict.decision,
        verdict.route.name_shared(),
        started.elapsed(),
    );
    span.record("authz.decision", verdict.decision.kind());
    span.record("authz.reason", verdict.decision.reason());
    span.record("authz.route", verdict.route.name());
    span.record("authz.decision_id", verdict.decision_id.as_str());
    let trace_id = crate::telemetry::trace_id(&span, trace("traceparent"));
    log_verdict(&verdict, view, transport, &trace_id);
    let origin = crate::decision_log::Origin {
        source_ip: source.0,
        source_port: source.1,
        trace_id: &trace_id,
    };
    runtime.decision_log().record(&verdict, view, &origin);
    write(crate::answer::answer(&verdict, view, runtime.answers()))
}

/// The request header that asks for the explanation (with `server.allow_explain`).
pub const EXPLAIN_HEADER: &str = "x-portcullis-explain";

/// One line per decision: allows at debug, permits (would-be denials) and denials at info, errors at warn.
/// The path is logged without its query string (which may carry credentials); credentials never are.
fn log_verdict(
    verdict: &Verdict<'_>,
    view: &RequestView<'_>,
    transport: Transport,
    trace_id: &str,
) {
    let transport = transport.as_str();
    let id = verdict.decision_id.as_str();
    let route = verdict.route.name();
    match &verdict.decision {
        Decision::Allow(identity) => tracing::debug!(
            authz.decision = "allow",
            authz.decision_id = id,
            authz.transport = transport,
            authz.route = route,
            provider.name = %identity.provider,
            principal = identity.subject.as_deref().unwrap_or(""),
            http.method = view.method,
            http.path = view.path,
            request.id = view.request_id,
            trace.id = trace_id,
        ),
        Decision::Permit {
            identity,
            would_deny,
        } => tracing::info!(
            authz.decision = "permit",
            authz.would_deny = would_deny.label(),
            authz.decision_id = id,
            authz.transport = transport,
            authz.route = route,
            principal = identity
                .as_ref()
                .and_then(|i| i.subject.as_deref())
                .unwrap_or(""),
            http.method = view.method,
            http.path = view.path,
            request.id = view.request_id,
            trace.id = trace_id,
            "permissive mode: allowed a request that enforce mode would deny"
        ),
        Decision::Deny(denial) => tracing::info!(
            authz.decision = "deny",
            authz.reason = denial.label(),
            authz.decision_id = id,
            authz.transport = transport,
            authz.route = route,
            provider.name = denial.provider.as_deref().unwrap_or(""),
            principal = denial.principal.as_deref().unwrap_or(""),
            http.method = view.method,
            http.path = view.path,
            request.id = view.request_id,
            trace.id = trace_id,
        ),
        Decision::Error(why) => tracing::warn!(
            authz.decision = "error",
            authz.reason = why.as_str(),
            authz.decision_id = id,
            authz.transport = transport,
            authz.route = route,
            http.method = view.method,
            http.path = view.path,
            request.id = view.request_id,
            trace.id = trace_id,
        ),
    }
}
