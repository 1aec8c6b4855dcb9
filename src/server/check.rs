//! One check, whatever the transport: [`check`] takes our request view, asks the runtime, records the
//! metrics, the trace span's fields, the log line and the decision log, and hands the answer to the
//! transport's writer. The gRPC `Check` method ([`CheckService`]) and the HTTP forward-auth listener
//! (`server/http.rs`) both call it, so there is one decision path. Admission (`server.max_concurrent_checks`)
//! is taken by each transport before it reads the request, so an overloaded server answers at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use super::translate;
use super::App;
use crate::answer::Answer;
use crate::authorizer::Verdict;
use crate::decision::Decision;
use crate::metrics::{Rejection, Transport};
use crate::pb::auth::authorization_server::Authorization;
use crate::pb::auth::{CheckRequest, CheckResponse};
use crate::request::RequestView;
use crate::runtime::Runtime;

pub struct CheckService {
    app: Arc<App>,
}

impl CheckService {
    pub fn new(app: Arc<App>) -> CheckService {
        CheckService { app }
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        let metrics = self.app.metrics();
        // Past the limit, an immediate error answer: a queue would only answer after Envoy gave up.
        let Some(_permit) = self.app.admit() else {
            metrics.reject(Transport::Grpc, Rejection::Overloaded);
            return Err(Status::resource_exhausted(
                "too many checks in flight (server.max_concurrent_checks)",
            ));
        };
        let _in_flight = metrics.in_flight();
        match deadline(request.metadata()) {
            Some(budget) => match tokio::time::timeout(budget, self.decide(request, started)).await
            {
                Ok(answer) => answer,
                Err(_) => {
                    metrics.reject(Transport::Grpc, Rejection::DeadlineExceeded);
                    Err(Status::deadline_exceeded(
                        "the decision did not finish within the caller's deadline",
                    ))
                }
            },
            None => self.decide(request, started).await,
        }
    }
}

/// How long the decision may take: the caller's `grpc-timeout`, less 5% (at least 5 ms), so that our
/// `DEADLINE_EXCEEDED` reaches the caller before its own timer fires (and before the transport's, which
/// would answer `CANCELLED`).
fn deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    // gRPC over HTTP/2: at most 8 digits, then H, M, S, m, u or n.
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let budget = match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Some(budget.saturating_sub((budget / 20).max(Duration::from_millis(5))))
}

impl CheckService {
    /// Decides one admitted Check.
    async fn decide(
        &self,
        request: Request<CheckRequest>,
        started: Instant,
    ) -> Result<Response<CheckResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        let raw = translate::raw_headers(&request);
        let filter_metadata = translate::metadata(&request);
        let view = translate::request_view(&request, raw.as_deref(), filter_metadata.as_ref());
        // RFC 9728: the resource's metadata is public; the request never reaches the upstream. (Only
        // gRPC can answer a body in Envoy's name: over HTTP forward auth a 200 is an allow.)
        let runtime = self.app.runtime();
        if let Some(document) = runtime.resources().document(view.path) {
            let answer = crate::answer::resource_document(document);
            return Ok(Response::new(translate::check_response(answer)));
        }
        let source = translate::source_address(&request).unwrap_or(("", 0));
        // Envoy's own trace context is in the gRPC metadata; else the request's headers carry one.
        let trace = |key: &str| {
            metadata
                .get(key)
                .and_then(|v| v.to_str().ok())
                .or_else(|| view.headers.get(key))
        };
        let response = check(
            &self.app,
            runtime,
            Arrival {
                transport: Transport::Grpc,
                source,
                started,
            },
            &view,
            trace,
            translate::check_response,
        )
        .await;
        Ok(Response::new(response))
    }
}

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
    log_verdict(&verdict, view, transport);
    let origin = crate::decision_log::Origin {
        source_ip: source.0,
        source_port: source.1,
        traceparent: trace("traceparent"),
    };
    runtime.decision_log().record(&verdict, view, &origin);
    write(crate::answer::answer(&verdict, view, runtime.answers()))
}

/// The request header that asks for the explanation (with `server.allow_explain`).
pub const EXPLAIN_HEADER: &str = "x-portcullis-explain";

/// One line per decision: allows at debug, permits (would-be denials) and denials at info, errors at warn.
/// The path is logged without its query string (which may carry credentials); credentials never are.
fn log_verdict(verdict: &Verdict<'_>, view: &RequestView<'_>, transport: Transport) {
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
        ),
    }
}
