//! The load generator: C connections × S streams, closed loop or open loop at a fixed rate, a traffic mix,
//! and every answer checked against the decision its token calls for.
//!
//! The transport is an enum ([`Target`] → [`Conn`], [`Payload`]): gRPC Check, and the HTTP forward-auth
//! listener over HTTP/1.1 or h2c, each with its own `prepare` (the request for one `Authorization` value)
//! and `check` (the answer read back as an [`Outcome`]). The loops, the mix and the statistics are shared.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut as _, Bytes};
use hdrhistogram::Histogram;
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use portcullis_proto::auth::{attribute_context, AttributeContext, CheckRequest};

/// What a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The one hot valid token (a cache hit after its first use).
    Hot,
    /// One of N distinct valid tokens (cache misses while N exceeds the cache, or with the cache off).
    Distinct,
    /// A token whose signature is another token's (distinct each time: a full verification, denied).
    Bad,
    /// No `authorization` header.
    None,
    /// The `--flood-connections` load: distinct bad-signature tokens, beside the main load.
    Flood,
}

impl Class {
    pub const ALL: [Class; 5] = [
        Class::Hot,
        Class::Distinct,
        Class::Bad,
        Class::None,
        Class::Flood,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::Hot => "hot",
            Class::Distinct => "distinct",
            Class::Bad => "bad",
            Class::None => "none",
            Class::Flood => "flood",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The answer a correct authorizer gives.
    pub fn expected(self) -> Outcome {
        match self {
            Class::Hot | Class::Distinct => Outcome::Allowed,
            Class::Bad | Class::None | Class::Flood => Outcome::Denied(401),
        }
    }
}

/// What the server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    /// Denied with this HTTP status.
    Denied(u16),
    /// An error answer: the server could not decide.
    Undecided,
}

/// The share of each class in the main load: `hot=90,distinct=5,bad=3,none=2` (weights, any total).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// Cumulative weights of hot, distinct, bad, none.
    cumulative: [u32; 4],
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Mix, String> {
        let mut weights = [0u32; 4];
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not CLASS=WEIGHT"))?;
            let i = match name.trim() {
                "hot" => 0,
                "distinct" => 1,
                "bad" => 2,
                "none" => 3,
                other => {
                    return Err(format!(
                        "unknown class `{other}` (expected hot, distinct, bad, none)"
                    ))
                }
            };
            weights[i] = weight
                .trim()
                .parse()
                .map_err(|_| format!("`{weight}` is not a whole number"))?;
        }
        let mut cumulative = [0u32; 4];
        let mut total = 0u32;
        for (c, w) in cumulative.iter_mut().zip(weights) {
            total = total.checked_add(w).ok_or("weights too large")?;
            *c = total;
        }
        if total == 0 {
            return Err("the mix has no weight".into());
        }
        Ok(Mix { cumulative })
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut prev = 0;
        let mut parts = Vec::new();
        for (name, c) in ["hot", "distinct", "bad", "none"]
            .iter()
            .zip(self.cumulative)
        {
            if c > prev {
                parts.push(format!("{name}={}", c - prev));
            }
            prev = c;
        }
        f.write_str(&parts.join(","))
    }
}

impl Mix {
    pub fn pick(&self, r: u64) -> Class {
        let x = (r % u64::from(self.cumulative[3])) as u32;
        match self.cumulative.iter().position(|&c| x < c) {
            Some(0) => Class::Hot,
            Some(1) => Class::Distinct,
            Some(2) => Class::Bad,
            _ => Class::None,
        }
    }

    pub fn uses(&self, class: Class) -> bool {
        let prev = |i: usize| if i == 0 { 0 } else { self.cumulative[i - 1] };
        let i = class.index();
        i < 4 && self.cumulative[i] > prev(i)
    }
}

/// A small, fast, seedable generator (xorshift64*): the mix's choice costs nothing next to a call.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Where the load goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// An ext_authz v3 gRPC server, e.g. `http://127.0.0.1:9001`.
    Grpc(String),
    /// An HTTP forward-auth listener in `http_mode: envoy` (as Envoy's `http_service` asks), e.g.
    /// `http://127.0.0.1:9192`: HTTP/1.1, one connection per stream in flight.
    Http(String),
    /// The same over h2c (HTTP/2 with prior knowledge): one connection, multiplexed, like gRPC.
    H2c(String),
}

/// One encoded request, ready to send as many times as needed.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A `CheckRequest`, protobuf-encoded once.
    Grpc(Bytes),
    /// The original request's URL and headers, as Envoy's `http_service` forwards them.
    Http {
        url: Arc<str>,
        headers: reqwest::header::HeaderMap,
    },
}

/// One connection (cheap to clone: clones share it). For `Http`, a pool of HTTP/1.1 connections.
#[derive(Clone)]
pub enum Conn {
    Grpc(tonic::client::Grpc<Channel>),
    Http(reqwest::Client),
}

/// The original request the HTTP payloads describe (the gRPC one's path).
const HTTP_PATH: &str = "/api/items?page=2";

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

impl Target {
    /// Opens one connection (one HTTP/2 connection per call).
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        match self {
            Target::Grpc(uri) => {
                let channel = Endpoint::from_shared(uri.clone())?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(10))
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot connect to {uri}: {e}"))?;
                Ok(Conn::Grpc(tonic::client::Grpc::new(channel)))
            }
            Target::Http(_) | Target::H2c(_) => {
                let builder = reqwest::Client::builder()
                    .no_proxy()
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(10));
                let builder = match self {
                    Target::H2c(_) => builder.http2_prior_knowledge(),
                    _ => builder.http1_only(),
                };
                Ok(Conn::Http(builder.build()?))
            }
        }
    }

    /// The request for one `authorization` header value (or none), as Envoy would send it.
    pub fn prepare(&self, authorization: Option<&str>) -> Payload {
        match self {
            Target::Grpc(_) => Payload::Grpc(check_request(authorization).encode_to_vec().into()),
            Target::Http(base) | Target::H2c(base) => {
                use reqwest::header::{HeaderMap, HeaderValue};
                let mut headers = HeaderMap::new();
                for (name, value) in [
                    ("user-agent", "portcullis-bench/1.0"),
                    ("accept", "application/json"),
                    ("x-forwarded-proto", "http"),
                    ("x-request-id", "7f1c2c1e-2f8b-4c1e-9a51-1a2b3c4d5e6f"),
                ] {
                    headers.insert(name, HeaderValue::from_static(value));
                }
                if let Some(value) = authorization.and_then(|v| HeaderValue::from_str(v).ok()) {
                    headers.insert("authorization", value);
                }
                Payload::Http {
                    url: format!("{}{HTTP_PATH}", base.trim_end_matches('/')).into(),
                    headers,
                }
            }
        }
    }
}

/// A `CheckRequest` shaped like Envoy's: pseudo-headers and the usual client headers.
fn check_request(authorization: Option<&str>) -> CheckRequest {
    let mut headers: std::collections::HashMap<String, String> = [
        (":method", "GET"),
        (":path", "/api/items?page=2"),
        (":authority", "api.bench.invalid"),
        (":scheme", "http"),
        ("user-agent", "portcullis-bench/1.0"),
        ("accept", "application/json"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "7f1c2c1e-2f8b-4c1e-9a51-1a2b3c4d5e6f"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Some(value) = authorization {
        headers.insert("authorization".into(), value.to_owned());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                time: None,
                http: Some(attribute_context::HttpRequest {
                    id: "7f1c2c1e-2f8b-4c1e-9a51-1a2b3c4d5e6f".into(),
                    method: "GET".into(),
                    path: "/api/items?page=2".into(),
                    host: "api.bench.invalid".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

impl Conn {
    pub async fn check(&mut self, payload: &Payload) -> Result<Outcome, String> {
        match (self, payload) {
            (Conn::Grpc(grpc), Payload::Grpc(bytes)) => {
                grpc.ready().await.map_err(|e| format!("not ready: {e}"))?;
                let response = grpc
                    .unary(
                        tonic::Request::new(bytes.clone()),
                        http::uri::PathAndQuery::from_static(CHECK_PATH),
                        PreEncoded,
                    )
                    .await
                    .map_err(|status| format!("gRPC {:?}: {}", status.code(), status.message()))?;
                Ok(response.into_inner().outcome())
            }
            (Conn::Http(client), Payload::Http { url, headers }) => {
                let response = client
                    .get(&**url)
                    .headers(headers.clone())
                    .send()
                    .await
                    .map_err(|e| format!("HTTP: {e}"))?;
                let status = response.status().as_u16();
                // Read the body to its end, so the connection is reused.
                response
                    .bytes()
                    .await
                    .map_err(|e| format!("HTTP body: {e}"))?;
                Ok(http_outcome(status))
            }
            _ => Err("a payload for another transport".to_owned()),
        }
    }
}

/// What a proxy makes of a forward-auth answer: 200 allows, 503 is "cannot decide", the rest denies.
pub fn http_outcome(status: u16) -> Outcome {
    match status {
        200 => Outcome::Allowed,
        503 => Outcome::Undecided,
        other => Outcome::Denied(other),
    }
}

/// The parts of a `CheckResponse` a decision is read from (tags as in `external_auth.proto`). Everything
/// else (the identity headers, the dynamic metadata) is skipped unread: the load generator shares the CPU
/// with the servers it measures, so it must not spend more on a larger answer than reading its bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct Verdict {
    #[prost(message, optional, tag = "1")]
    status: Option<Code>,
    #[prost(message, optional, tag = "2")]
    denied_response: Option<DeniedStatus>,
    #[prost(message, optional, tag = "3")]
    ok_response: Option<Skipped>,
    #[prost(message, optional, tag = "5")]
    error_response: Option<Skipped>,
}

/// `google.rpc.Status.code`, or `envoy.type.v3.HttpStatus.code`.
#[derive(Clone, PartialEq, prost::Message)]
struct Code {
    #[prost(int32, tag = "1")]
    code: i32,
}

/// `DeniedHttpResponse.status`.
#[derive(Clone, PartialEq, prost::Message)]
struct DeniedStatus {
    #[prost(message, optional, tag = "1")]
    status: Option<Code>,
}

/// A message whose fields are all skipped.
#[derive(Clone, PartialEq, prost::Message)]
struct Skipped {}

impl Verdict {
    /// What Envoy makes of the answer: [`outcome`] on the fields it reads.
    fn outcome(&self) -> Outcome {
        let code = self.status.as_ref().map_or(0, |s| s.code);
        if self.error_response.is_some() {
            return Outcome::Undecided;
        }
        if let Some(denied) = &self.denied_response {
            return Outcome::Denied(denied_status(denied.status.as_ref().map(|s| s.code)));
        }
        if code == 0 {
            Outcome::Allowed
        } else {
            Outcome::Denied(403)
        }
    }
}

/// The HTTP status of a denial: Envoy's 403 unless a valid status is set.
fn denied_status(code: Option<i32>) -> u16 {
    code.and_then(|c| u16::try_from(c).ok())
        .filter(|&s| s >= 100)
        .unwrap_or(403)
}

/// Sends bytes encoded once; decodes the answer's decision.
#[derive(Clone, Copy)]
struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = Verdict;
    type Encoder = PreEncoded;
    type Decoder = PreEncoded;

    fn encoder(&mut self) -> PreEncoded {
        PreEncoded
    }

    fn decoder(&mut self) -> PreEncoded {
        PreEncoded
    }
}

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for PreEncoded {
    type Item = Verdict;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Verdict>, tonic::Status> {
        Verdict::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable CheckResponse: {e}")))
    }
}

/// The prepared requests of every class.
pub struct Requests {
    pub hot: Vec<Payload>,
    pub distinct: Vec<Payload>,
    pub bad: Vec<Payload>,
    pub none: Vec<Payload>,
}

impl Requests {
    pub fn new(target: &Target, tokens: &super::tokens::Tokens) -> Requests {
        let bearer = |t: &String| target.prepare(Some(&format!("Bearer {t}")));
        Requests {
            hot: vec![bearer(&tokens.hot)],
            distinct: tokens.distinct.iter().map(bearer).collect(),
            bad: tokens.bad.iter().map(bearer).collect(),
            none: vec![target.prepare(None)],
        }
    }

    fn pick(&self, class: Class, rng: &mut Rng) -> &Payload {
        let list = match class {
            Class::Hot => &self.hot,
            Class::Distinct => &self.distinct,
            Class::Bad | Class::Flood => &self.bad,
            Class::None => &self.none,
        };
        &list[(rng.next_u64() % list.len() as u64) as usize]
    }
}

fn histogram() -> Histogram<u64> {
    // Nanoseconds, 1 ns to 100 s, 2 significant figures (1%): small enough for one per worker and class.
    Histogram::new_with_bounds(1, 100_000_000_000, 2).expect("valid histogram bounds")
}

/// What one phase (or one worker of it) saw.
pub struct Stats {
    /// Latency of the answered calls, per class, in nanoseconds.
    pub latency: Vec<Histogram<u64>>,
    /// Calls that got no answer (transport or gRPC error).
    pub errors: u64,
    /// Answers that were not the expected decision.
    pub mismatches: u64,
    /// The first few error and mismatch descriptions (never a token).
    pub samples: Vec<String>,
    /// Open loop: how late the client sent, behind the intended time (nanoseconds).
    pub send_lag: Histogram<u64>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            latency: Class::ALL.iter().map(|_| histogram()).collect(),
            errors: 0,
            mismatches: 0,
            samples: Vec::new(),
            send_lag: histogram(),
        }
    }

    fn sample(&mut self, what: String) {
        if self.samples.len() < 5 {
            self.samples.push(what);
        }
    }

    fn record(
        &mut self,
        class: Class,
        latency: Duration,
        result: Result<Outcome, String>,
        verify: bool,
    ) {
        match result {
            Ok(outcome) => {
                self.latency[class.index()].saturating_record(latency.as_nanos() as u64);
                if verify && outcome != class.expected() {
                    self.mismatches += 1;
                    self.sample(format!(
                        "{} token: expected {:?}, got {outcome:?}",
                        class.name(),
                        class.expected()
                    ));
                }
            }
            Err(e) => {
                self.errors += 1;
                self.sample(format!("{} token: {e}", class.name()));
            }
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            a.add(b).expect("same bounds");
        }
        self.send_lag.add(&other.send_lag).expect("same bounds");
        self.errors += other.errors;
        self.mismatches += other.mismatches;
        for s in &other.samples {
            self.sample(s.clone());
        }
    }

    pub fn class(&self, class: Class) -> &Histogram<u64> {
        &self.latency[class.index()]
    }

    /// Every answered call of the main load (the flood apart).
    pub fn main_load(&self) -> Histogram<u64> {
        let mut all = histogram();
        for class in [Class::Hot, Class::Distinct, Class::Bad, Class::None] {
            all.add(self.class(class)).expect("same bounds");
        }
        all
    }

    pub fn answered(&self, class: Class) -> u64 {
        self.class(class).len()
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// How one phase runs.
#[derive(Clone)]
pub struct Plan {
    pub connections: usize,
    pub streams: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub mix: Mix,
    /// Open loop at this many requests per second in total; closed loop when `None`.
    pub rate: Option<f64>,
    /// Extra connections sending distinct bad-signature tokens, closed loop, beside the main load.
    pub flood_connections: usize,
    /// Check decisions (false for the no-op server, which allows everything).
    pub verify: bool,
}

/// When the measured window starts and ends.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

/// Runs one phase against `target`; `on_window` is called at the measured window's start and end (for
/// CPU readings).
pub async fn run(
    target: &Target,
    requests: Arc<Requests>,
    plan: &Plan,
    mut on_window: impl FnMut(bool) + Send,
) -> anyhow::Result<(Stats, Duration)> {
    let mut conns = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        conns.push(target.connect().await?);
    }
    let mut flood_conns = Vec::with_capacity(plan.flood_connections);
    for _ in 0..plan.flood_connections {
        flood_conns.push(target.connect().await?);
    }
    let begin = Instant::now() + Duration::from_millis(20);
    let window = Window {
        start: begin + plan.warmup,
        end: begin + plan.warmup + plan.duration,
    };

    let mut tasks = Vec::new();
    for (c, conn) in flood_conns.into_iter().enumerate() {
        for s in 0..plan.streams {
            let seed = 0xF100D + (c * plan.streams + s) as u64;
            tasks.push(tokio::spawn(closed_worker(
                conn.clone(),
                Arc::clone(&requests),
                None,
                seed,
                window,
                plan.verify,
            )));
        }
    }
    let main = match plan.rate {
        None => {
            for (c, conn) in conns.into_iter().enumerate() {
                for s in 0..plan.streams {
                    let seed = (c * plan.streams + s) as u64 + 1;
                    tasks.push(tokio::spawn(closed_worker(
                        conn.clone(),
                        Arc::clone(&requests),
                        Some(plan.mix),
                        seed,
                        window,
                        plan.verify,
                    )));
                }
            }
            None
        }
        Some(rate) => Some(tokio::spawn(open_loop(
            conns,
            Arc::clone(&requests),
            plan.clone(),
            rate,
            begin,
            window,
        ))),
    };

    tokio::time::sleep_until(window.start.into()).await;
    on_window(true);
    tokio::time::sleep_until(window.end.into()).await;
    on_window(false);

    let mut stats = Stats::new();
    for task in tasks {
        stats.merge(&task.await?);
    }
    if let Some(main) = main {
        stats.merge(&main.await??);
    }
    Ok((stats, plan.duration))
}

/// One stream: the next call as soon as the last answer is in. `mix` None: the flood (bad tokens only).
async fn closed_worker(
    mut conn: Conn,
    requests: Arc<Requests>,
    mix: Option<Mix>,
    seed: u64,
    window: Window,
    verify: bool,
) -> Stats {
    let mut stats = Stats::new();
    let mut rng = Rng::new(seed);
    loop {
        let class = mix.map_or(Class::Flood, |m| m.pick(rng.next_u64()));
        let payload = requests.pick(class, &mut rng);
        let start = Instant::now();
        if start >= window.end {
            break;
        }
        let result = conn.check(payload).await;
        if start >= window.start {
            stats.record(class, start.elapsed(), result, verify);
        }
    }
    stats
}

/// Sends at a fixed rate whatever the answers do, and times each call from when it should have been sent
/// (so a stall is charged to every request it delays: no coordinated omission). At most `streams` calls
/// are in flight per connection; a call waiting for a free stream is late, and its wait counts.
async fn open_loop(
    conns: Vec<Conn>,
    requests: Arc<Requests>,
    plan: Plan,
    rate: f64,
    begin: Instant,
    window: Window,
) -> anyhow::Result<Stats> {
    anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
    let interval = Duration::from_secs_f64(1.0 / rate);
    // A thread paces (tokio's timer ticks in milliseconds; this one sleeps to the microsecond).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let end = window.end;
    let pacer = std::thread::spawn(move || {
        let mut i: u32 = 0;
        loop {
            let intended = begin + interval * i;
            if intended >= end {
                break;
            }
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            if tx.send(intended).is_err() {
                break;
            }
            i = i.saturating_add(1);
        }
    });
    let shared = Arc::new(Mutex::new(Stats::new()));
    let slots: Vec<_> = conns
        .into_iter()
        .map(|c| (c, Arc::new(tokio::sync::Semaphore::new(plan.streams))))
        .collect();
    let mut rng = Rng::new(0x0BE7);
    let mut calls = tokio::task::JoinSet::new();
    let mut seq = 0usize;
    while let Some(intended) = rx.recv().await {
        let (conn, slot) = &slots[seq % slots.len()];
        seq += 1;
        let class = plan.mix.pick(rng.next_u64());
        let payload = requests.pick(class, &mut rng).clone();
        let (mut conn, slot, shared) = (conn.clone(), Arc::clone(slot), Arc::clone(&shared));
        let verify = plan.verify;
        calls.spawn(async move {
            let _permit = slot.acquire_owned().await;
            let sent = Instant::now();
            let result = conn.check(&payload).await;
            if intended >= window.start {
                let mut stats = shared.lock().expect("stats lock");
                stats.record(class, intended.elapsed(), result, verify);
                stats
                    .send_lag
                    .saturating_record((sent - intended).as_nanos() as u64);
            }
        });
        while calls.try_join_next().is_some() {}
    }
    let _ = pacer.join();
    // Let the calls in flight finish (each has the transport's own timeout).
    while calls.join_next().await.is_some() {}
    let stats = std::mem::take(&mut *shared.lock().expect("stats lock"));
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_proto::auth::{
        check_response, CheckResponse, DeniedHttpResponse, OkHttpResponse,
    };
    use portcullis_proto::rpc;

    /// What Envoy makes of a whole `CheckResponse`: the reference the client's [`Verdict`] reading is
    /// tested against.
    fn outcome(response: &CheckResponse) -> Outcome {
        let code = response.status.as_ref().map_or(0, |s| s.code);
        let denied_status =
            |d: &DeniedHttpResponse| denied_status(d.status.as_ref().map(|s| s.code));
        match &response.http_response {
            Some(check_response::HttpResponse::ErrorResponse(_)) => Outcome::Undecided,
            Some(check_response::HttpResponse::DeniedResponse(d)) => {
                Outcome::Denied(denied_status(d))
            }
            _ if code == 0 => Outcome::Allowed,
            _ => Outcome::Denied(403),
        }
    }

    #[test]
    fn the_mix_parses_and_picks_each_class_by_its_weight() {
        let mix: Mix = "hot=90,distinct=5,bad=3,none=2".parse().unwrap();
        let mut counts = [0u32; 4];
        for r in 0..100u64 {
            counts[mix.pick(r).index()] += 1;
        }
        assert_eq!(counts, [90, 5, 3, 2]);
        assert!(mix.uses(Class::None));
        assert_eq!(mix.to_string(), "hot=90,distinct=5,bad=3,none=2");
        let hot: Mix = "hot=1".parse().unwrap();
        assert!((0..50).all(|r| hot.pick(r) == Class::Hot));
        assert!(!hot.uses(Class::Distinct));
        assert!("hot=0".parse::<Mix>().is_err());
        assert!("warm=3".parse::<Mix>().is_err());
        assert!("hot".parse::<Mix>().is_err());
    }

    #[test]
    fn forward_auth_answers_are_read_as_proxies_read_them() {
        assert_eq!(http_outcome(200), Outcome::Allowed);
        assert_eq!(http_outcome(401), Outcome::Denied(401));
        assert_eq!(http_outcome(400), Outcome::Denied(400));
        assert_eq!(http_outcome(503), Outcome::Undecided);
        let target = Target::Http("http://127.0.0.1:1/".into());
        match target.prepare(Some("Bearer t")) {
            Payload::Http { url, headers } => {
                assert_eq!(&*url, "http://127.0.0.1:1/api/items?page=2");
                assert_eq!(headers["authorization"], "Bearer t");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_are_read_as_envoy_reads_them() {
        let ok = CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(check_response::HttpResponse::OkResponse(
                OkHttpResponse::default(),
            )),
            ..Default::default()
        };
        assert_eq!(outcome(&ok), Outcome::Allowed);
        let denied = CheckResponse {
            status: Some(rpc::Status {
                code: 16,
                ..Default::default()
            }),
            http_response: Some(check_response::HttpResponse::DeniedResponse(
                DeniedHttpResponse {
                    status: Some(portcullis_proto::http_type::HttpStatus { code: 401 }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        assert_eq!(outcome(&denied), Outcome::Denied(401));
        let bare_deny = CheckResponse {
            status: Some(rpc::Status {
                code: 7,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(outcome(&bare_deny), Outcome::Denied(403));
        let error = CheckResponse {
            status: Some(rpc::Status {
                code: 14,
                ..Default::default()
            }),
            http_response: Some(check_response::HttpResponse::ErrorResponse(
                DeniedHttpResponse::default(),
            )),
            ..Default::default()
        };
        assert_eq!(outcome(&error), Outcome::Undecided);
        let mut big_ok = ok.clone();
        big_ok.http_response = Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
            headers: vec![portcullis_proto::core::HeaderValueOption {
                header: Some(portcullis_proto::core::HeaderValue {
                    key: "x-auth-subject".into(),
                    value: "alice".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            headers_to_remove: vec!["x-auth-email".into()],
            ..Default::default()
        }));
        big_ok.dynamic_metadata = Some(portcullis_proto::Struct::default());
        // The client reads only the decision from the wire: the same outcome as the whole answer's.
        for (response, expected) in [
            (&ok, Outcome::Allowed),
            (&big_ok, Outcome::Allowed),
            (&denied, Outcome::Denied(401)),
            (&bare_deny, Outcome::Denied(403)),
            (&error, Outcome::Undecided),
        ] {
            let verdict = Verdict::decode(&*response.encode_to_vec()).unwrap();
            assert_eq!(verdict.outcome(), expected, "{response:?}");
        }
    }

    #[test]
    fn a_wrong_decision_is_a_mismatch_and_a_failed_call_an_error() {
        let mut stats = Stats::new();
        let ms = Duration::from_millis(1);
        stats.record(Class::Hot, ms, Ok(Outcome::Allowed), true);
        stats.record(Class::Bad, ms, Ok(Outcome::Allowed), true);
        stats.record(Class::None, ms, Ok(Outcome::Denied(401)), true);
        stats.record(Class::Hot, ms, Err("boom".into()), true);
        assert_eq!(stats.mismatches, 1);
        assert_eq!(stats.errors, 1);
        assert_eq!(stats.main_load().len(), 3);
        let mut unchecked = Stats::new();
        unchecked.record(Class::Bad, ms, Ok(Outcome::Allowed), false);
        assert_eq!(unchecked.mismatches, 0);
    }
}
