//! The gRPC Check endpoint, `envoy.service.auth.v3.Authorization/Check`: [`CheckServer`] is the tower
//! service the tonic router sends it to, built on tonic's own unary handling (framing, the
//! `max_decoding_message_size` limit, status trailers) with a codec that hands over the message's bytes
//! instead of a prost-decoded `CheckRequest`. [`CheckService`] admits the check, applies the caller's
//! deadline, reads the bytes with `portcullis-proto`'s `wire` and decides through `server/check.rs`.
//!
//! The generated `AuthorizationServer` is not used here: it would decode the whole message with prost
//! first (see `wire.rs` for what that costs). It stays for the no-op server (`bench --serve-noop`) and
//! the generated client.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes};
use prost::Message as _;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use super::check::{check, Arrival};
use super::App;
use crate::metrics::{Rejection, Transport};
use crate::pb::auth::CheckResponse;
use crate::pb::{translate, wire};

/// The one method's path.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The gRPC Check method's logic: admission, the caller's deadline, the decision. The server calls it
/// through [`CheckServer`]; `explain`, the benches and the fuzz targets call [`CheckService::check`]
/// with a message's bytes.
pub struct CheckService {
    app: Arc<App>,
}

// === impl CheckService ===

impl CheckService {
    pub fn new(app: Arc<App>) -> CheckService {
        CheckService { app }
    }

    /// One Check: `request` carries the encoded `CheckRequest`. A message that cannot be read is
    /// answered `INTERNAL`, as tonic answers a message prost cannot decode; it is never allowed.
    pub async fn check(&self, request: Request<Bytes>) -> Result<Response<CheckResponse>, Status> {
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

    /// Decides one admitted Check.
    async fn decide(
        &self,
        request: Request<Bytes>,
        started: Instant,
    ) -> Result<Response<CheckResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let request = wire::parse(&message).map_err(|error| {
            tracing::debug!(error = %error, "a Check message could not be decoded");
            Status::internal(format!("failed to decode Protobuf message: {error}"))
        })?;
        let view = request.view();
        // RFC 9728: the resource's metadata is public; the request never reaches the upstream. (Only
        // gRPC can answer a body in Envoy's name: over HTTP forward auth a 200 is an allow.)
        let runtime = self.app.runtime();
        if let Some(document) = runtime.resources().document(view.path) {
            let answer = crate::answer::resource_document(document);
            return Ok(Response::new(translate::check_response(answer)));
        }
        let source = request.source_address().unwrap_or(("", 0));
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

/// The `envoy.service.auth.v3.Authorization` service for the tonic router: `Check`, and `UNIMPLEMENTED`
/// for any other method, as the generated server answers.
#[derive(Clone)]
pub struct CheckServer {
    service: Arc<CheckService>,
    /// `server.max_request_bytes`: a larger message is refused (`OUT_OF_RANGE`) before it is read.
    max_decoding_message_size: usize,
}

// === impl CheckServer ===

impl CheckServer {
    pub fn new(service: CheckService, max_decoding_message_size: usize) -> CheckServer {
        CheckServer {
            service: Arc::new(service),
            max_decoding_message_size,
        }
    }
}

impl NamedService for CheckServer {
    const NAME: &'static str = super::SERVICE_NAME;
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

impl tower::Service<http::Request<Body>> for CheckServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            // A trailers-only answer, as the generated server gives.
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let method = CheckMethod(Arc::clone(&self.service));
        let mut grpc = Grpc::new(MessageCodec)
            .apply_max_message_size_config(Some(self.max_decoding_message_size), None);
        Box::pin(async move { Ok(grpc.unary(method, request).await) })
    }
}

/// `Check` as tonic's unary handler calls it.
struct CheckMethod(Arc<CheckService>);

impl UnaryService<Bytes> for CheckMethod {
    type Response = CheckResponse;
    type Future = BoxFuture<Response<CheckResponse>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let service = Arc::clone(&self.0);
        Box::pin(async move { service.check(request).await })
    }
}

/// The request's message as bytes (tonic has already checked its size and removed the framing), the
/// response encoded by prost.
#[derive(Clone, Copy, Default)]
struct MessageCodec;

impl Codec for MessageCodec {
    type Encode = CheckResponse;
    type Decode = Bytes;
    type Encoder = MessageCodec;
    type Decoder = MessageCodec;

    fn encoder(&mut self) -> MessageCodec {
        MessageCodec
    }

    fn decoder(&mut self) -> MessageCodec {
        MessageCodec
    }
}

impl Decoder for MessageCodec {
    type Item = Bytes;
    type Error = Status;

    /// The message's bytes, without a copy (a split of tonic's receive buffer).
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

impl Encoder for MessageCodec {
    type Item = CheckResponse;
    type Error = Status;

    fn encode(&mut self, item: CheckResponse, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|error| Status::internal(format!("the answer did not encode: {error}")))
    }
}
