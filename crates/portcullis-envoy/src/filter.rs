//! One stream through the filter: Envoy's request headers become our [`RequestView`], the runtime
//! decides inline, and the [`Answer`] is written back onto the stream:
//! - an allow (or a permissive-mode permit): the client's copies of identity headers removed, the
//!   identity headers set, credential query parameters removed from `:path`; the request continues;
//! - a denial: a local reply with the denial's status, `WWW-Authenticate` and body;
//! - "cannot decide" (an upstream unavailable): 503, never an allow; a panic: 500.
//!
//! A decision that needs an upstream call (a key set not loaded yet, an unknown `kid`, introspection,
//! a webhook, GitHub, TokenReview) does not complete on its inline poll: it is returned as
//! [`Next::Pause`], driven to completion on the background runtime, and its [`Decided`] answer written
//! when Envoy resumes the stream on its worker (`ffi`).
//!
//! The stream is reached through the [`Stream`] trait: Envoy's in production (`ffi`), a fake in tests.

use std::sync::Arc;

use arc_swap::ArcSwap;

use futures_util::FutureExt as _;
use portcullis_core::answer::{Answer, Outcome};
use portcullis_core::{Env, Headers, RequestView, Runtime};

use crate::host::{self, Level};
use crate::settings::PerRoute;

/// What the filter needs from Envoy's side of one stream.
pub trait Stream {
    /// Calls `f` with every request header line (pseudo-headers included), in order, borrowed from
    /// the stream where it can (values that are not UTF-8 are decoded lossily).
    fn with_request_headers<R>(&self, f: impl FnOnce(Headers<'_>) -> R) -> R;
    /// Sets a request header, replacing every value it had; false when Envoy refused it.
    fn set_request_header(&mut self, name: &str, value: &str) -> bool;
    /// Removes every value of a request header.
    fn remove_request_header(&mut self, name: &str);
    /// Ends the stream with a local reply.
    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &str);
    /// Counts one decision in Envoy's stats (`portcullis_decisions`, by decision, reason and route)
    /// and records how long it took (`portcullis_check_duration_us`, by decision).
    fn count_decision(&mut self, decision: &str, reason: &str, route: &str, micros: u64);
}

/// What `on_request_headers` tells Envoy.
pub enum Next {
    /// The request goes on to the next filter.
    Continue,
    /// A local reply was sent: stop here.
    Stop,
    /// The decision waits for an upstream call: the stream is paused until [`Pending`] completes
    /// (off the worker) and its [`Decided`] is written (back on the worker).
    Pause(Pending),
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Next::Continue => "Continue",
            Next::Stop => "Stop",
            Next::Pause(_) => "Pause",
        })
    }
}

/// A decision that did not complete on its inline poll. It owns everything it reads (the runtime, a
/// copy of the request headers), so it can be driven to completion on the background runtime.
pub struct Pending {
    pub decision: futures_util::future::BoxFuture<'static, Decided>,
}

/// A finished decision: the answer to write onto the stream and the labels to count it by.
pub struct Decided {
    written: Written,
    counted: Counted,
    started: std::time::Instant,
}

/// The shared part of the filter: one per filter config, read by every worker. Its runtime is
/// replaced as a whole when its `config_file` changes; a check in flight finishes on the runtime it
/// started with.
pub struct Shared {
    current: Arc<ArcSwap<Generation>>,
    /// Reloads of the `config_file`: taken, refused.
    reloads: Arc<[std::sync::atomic::AtomicU64; 2]>,
    /// The `config_file` watch, stopped when the config goes.
    watch: Option<crate::runner::Background>,
}

/// One runtime and its background tasks (key set refreshers, API key file reloaders), stopped when
/// the runtime is replaced or the config goes.
struct Generation {
    runtime: Arc<Runtime>,
    _background: Option<crate::runner::Background>,
}

/// A host failure while building a config, as a config problem.
fn refused(why: &str) -> portcullis_core::ConfigErrors {
    portcullis_core::ConfigErrors(vec![portcullis_core::Problem {
        path: "filter_config".to_owned(),
        message: why.to_owned(),
    }])
}

/// Builds a runtime for `config` with the module's host (after `previous`: unchanged providers keep
/// their key sets and caches) and starts its background tasks.
fn build(
    config: &portcullis_core::Config,
    previous: Option<&Runtime>,
) -> Result<Generation, portcullis_core::ConfigErrors> {
    let upstream = crate::runner::upstream().map_err(|e| refused(&e))?;
    let clock = portcullis_core::Clock::system();
    let env = Env::new(
        clock.clone(),
        host::sources(),
        Arc::new(upstream),
        Arc::new(portcullis_core::env::NoKeyStorage),
    );
    let runtime = Runtime::build_after(config, &env, previous)?;
    let background = crate::runner::Background::spawn(&runtime, &clock).map_err(refused)?;
    Ok(Generation {
        runtime: Arc::new(runtime),
        _background: Some(background),
    })
}

fn log_refused(what: &str, errors: &portcullis_core::ConfigErrors) {
    host::log(Level::Error, &format!("portcullis: {what}: {errors}"));
    for problem in &errors.0 {
        host::log(Level::Error, &format!("portcullis: {problem}"));
    }
}

/// Reloads `path` (its new `bytes`) into `current`, or logs why not and keeps the running runtime.
fn reload(
    current: &ArcSwap<Generation>,
    counts: &[std::sync::atomic::AtomicU64; 2],
    path: &std::path::Path,
    bytes: Vec<u8>,
) {
    let running = current.load_full();
    let built = crate::settings::load_file(path, bytes).and_then(|loaded| {
        for (level, note) in &loaded.notes {
            host::log(*level, note);
        }
        build(&loaded.config, Some(&running.runtime))
    });
    match built {
        Ok(generation) => {
            current.store(Arc::new(generation));
            counts[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            host::log(
                Level::Info,
                &format!("portcullis: `{}` reloaded", path.display()),
            );
        }
        Err(errors) => {
            counts[1].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log_refused(
                &format!(
                    "the changed `{}` is refused; the running configuration stays in force",
                    path.display()
                ),
                &errors,
            );
        }
    }
}

// === impl Shared ===

impl Shared {
    /// Builds the runtime from the filter config; every problem is logged with its field path and the
    /// config is refused (Envoy then refuses the filter). A `config_file` is watched and reloaded.
    pub fn from_filter_config(filter_config: &[u8]) -> Option<Shared> {
        let result = crate::settings::load(filter_config, &host::ProcessFiles).and_then(|loaded| {
            for (level, note) in &loaded.notes {
                host::log(*level, note);
            }
            Ok((build(&loaded.config, None)?, loaded.file))
        });
        match result {
            Ok((generation, file)) => {
                let mut shared = Shared {
                    current: Arc::new(ArcSwap::from_pointee(generation)),
                    reloads: Arc::default(),
                    watch: None,
                };
                if let Some((path, digest)) = file {
                    // Weak: the watch must not keep a destroyed config's runtime alive.
                    let current = Arc::downgrade(&shared.current);
                    let counts = Arc::clone(&shared.reloads);
                    let watched = path.clone();
                    let watch = crate::runner::watch_file(path, digest, move |bytes| {
                        if let Some(current) = current.upgrade() {
                            reload(&current, &counts, &watched, bytes);
                        }
                    });
                    match watch {
                        Ok(watch) => shared.watch = Some(watch),
                        Err(why) => {
                            log_refused("the filter config is refused", &refused(why));
                            return None;
                        }
                    }
                }
                Some(shared)
            }
            Err(errors) => {
                log_refused("the filter config is refused", &errors);
                None
            }
        }
    }

    pub fn new(runtime: Runtime) -> Shared {
        Shared {
            current: Arc::new(ArcSwap::from_pointee(Generation {
                runtime: Arc::new(runtime),
                _background: None,
            })),
            reloads: Arc::default(),
            watch: None,
        }
    }

    /// The runtime this config decides with now.
    pub fn runtime(&self) -> Arc<Runtime> {
        Arc::clone(&self.current.load().runtime)
    }

    /// Whether its `config_file` is watched.
    pub fn is_watched(&self) -> bool {
        self.watch.is_some()
    }

    /// How many changes of its `config_file` were taken, and how many refused.
    pub fn reload_counts(&self) -> (u64, u64) {
        let [taken, refused] = &*self.reloads;
        (
            taken.load(std::sync::atomic::Ordering::Relaxed),
            refused.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// Decides the request on `stream`: inline when the decision needs no upstream call (the answer is
/// written and Envoy told to continue or stop), else [`Next::Pause`] with the decision in flight.
///
/// `per_route` is the route's per-route config, if it has one: `disabled` lets the request through
/// untouched; `route: NAME` decides it on that portcullis route (a name the filter's configuration
/// does not have is a 500 with a log line: never an allow, never another route).
pub fn on_request_headers(
    shared: &Shared,
    per_route: Option<&PerRoute>,
    stream: &mut impl Stream,
) -> Next {
    let started = std::time::Instant::now();
    let runtime = shared.runtime();
    let route = match per_route {
        None => None,
        Some(PerRoute::Disabled) => return Next::Continue,
        Some(PerRoute::Route(name)) => {
            if runtime.authorizer().policy().route_named(name).is_none() {
                host::log(
                    Level::Error,
                    &format!(
                        "portcullis: the per-route config names the route `{name}`, which this filter's configuration does not have; denied (500)"
                    ),
                );
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                stream.count_decision("error", "unknown_route", name, micros);
                stream.send_response(500, &[], "");
                return Next::Stop;
            }
            Some(Arc::clone(name))
        }
    };
    // The headers are copied once (one buffer): a decision that pauses outlives Envoy's borrow.
    let headers = stream.with_request_headers(|headers| OwnedHeaders::copy(&headers));
    let mut decision = decide(runtime, headers, route, started).boxed();
    match decision.as_mut().now_or_never() {
        Some(decided) => decided.write(stream),
        None => Next::Pause(Pending { decision }),
    }
}

/// What a panic in a paused decision answers: 500, never an allow.
pub fn panicked(stream: &mut impl Stream, started: std::time::Instant) {
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    stream.count_decision("error", "panic", "", micros);
    stream.send_response(500, &[], "");
}

/// The decision's labels for the decision counter.
type Counted = (&'static str, &'static str, Arc<str>);

/// A request's header lines copied out of Envoy into one buffer.
struct OwnedHeaders {
    text: String,
    /// Each line's name and value as byte ranges of `text`.
    lines: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

impl OwnedHeaders {
    fn copy(headers: &Headers<'_>) -> OwnedHeaders {
        let mut text = String::new();
        let mut lines = Vec::with_capacity(headers.len());
        for (name, value) in headers.entries() {
            let n = text.len();
            text.push_str(name);
            let v = text.len();
            text.push_str(value);
            lines.push((n..v, v..text.len()));
        }
        OwnedHeaders { text, lines }
    }

    fn pairs(&self) -> Vec<(&str, &str)> {
        self.lines
            .iter()
            .map(|(n, v)| (&self.text[n.clone()], &self.text[v.clone()]))
            .collect()
    }
}

/// Pending once, then ready: the test build's way to panic after the decision has paused.
#[cfg(feature = "test-panic")]
async fn pause_once() {
    let mut paused = false;
    std::future::poll_fn(|cx| {
        if paused {
            std::task::Poll::Ready(())
        } else {
            paused = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

/// Decides one request, into an owned answer.
async fn decide(
    runtime: Arc<Runtime>,
    headers: OwnedHeaders,
    route: Option<Arc<str>>,
    started: std::time::Instant,
) -> Decided {
    let pairs = headers.pairs();
    let headers = Headers::Pairs(&pairs);
    #[cfg(feature = "test-panic")]
    match headers.get("x-portcullis-test-panic") {
        Some("after-pause") => {
            pause_once().await;
            panic!("test-panic: x-portcullis-test-panic asked for a panic after the pause");
        }
        Some(_) => panic!("test-panic: x-portcullis-test-panic asked for a panic"),
        None => {}
    }
    let mut view = RequestView::new(
        headers.get(":method").unwrap_or(""),
        headers.get(":path").unwrap_or(""),
        headers.get(":authority").unwrap_or(""),
        headers,
        headers.get("x-request-id").unwrap_or(""),
    );
    view.scheme = headers.get(":scheme").unwrap_or("");
    let authorizer = runtime.authorizer();
    // The name was checked against this (immutable) runtime before; should it still be missing, the
    // answer is a 500, never a decision on another route.
    let route = match route {
        None => None,
        Some(name) => match authorizer.policy().route_named(&name) {
            Some(route) => Some(route),
            None => {
                return Decided {
                    written: Written::Reply {
                        status: 500,
                        headers: Vec::new(),
                        body: String::new(),
                    },
                    counted: ("error", "unknown_route", name),
                    started,
                }
            }
        },
    };
    let verdict = authorizer.decide_on(&view, route, false).await;
    // The decision log (Envoy's log): no source address or trace id from the module yet.
    runtime.decision_log().record(
        &verdict,
        &view,
        &portcullis_core::decision_log::Origin::default(),
    );
    let counted = (
        verdict.decision.kind(),
        verdict.decision.reason(),
        Arc::clone(verdict.route.name_shared()),
    );
    let answer = portcullis_core::answer::answer(&verdict, &view, runtime.answers());
    Decided {
        written: Written::from_answer(answer, view.path, view.query),
        counted,
        started,
    }
}

impl Decided {
    /// Counts the decision and writes its answer onto the stream.
    pub fn write(self, stream: &mut impl Stream) -> Next {
        let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let (decision, reason, route) = &self.counted;
        stream.count_decision(decision, reason, route, micros);
        self.written.write(stream)
    }
}

/// An answer in owned form, ready to be written onto the stream.
enum Written {
    Allow {
        remove: Vec<String>,
        set: Vec<(String, String)>,
        /// The new `:path` when credential query parameters are removed.
        path: Option<String>,
    },
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
}

impl Written {
    fn from_answer(answer: Answer<'_>, path: &str, query: &str) -> Written {
        let headers = answer
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match answer.outcome {
            Outcome::Allow => Written::Allow {
                remove: answer.remove,
                set: headers,
                path: (!answer.remove_query.is_empty())
                    .then(|| without_query_parameters(path, query, &answer.remove_query)),
            },
            // Never a 2xx or 3xx for a denial: Envoy would send it as if the upstream had.
            Outcome::Deny { .. } => Written::Reply {
                status: Some(answer.status)
                    .filter(|s| (400..600).contains(s))
                    .unwrap_or(403),
                headers,
                body: answer.body,
            },
            Outcome::Unavailable => Written::Reply {
                status: Some(answer.status)
                    .filter(|s| (500..600).contains(s))
                    .unwrap_or(503),
                headers,
                body: answer.body,
            },
        }
    }

    fn write(self, stream: &mut impl Stream) -> Next {
        match self {
            Written::Allow { remove, set, path } => {
                for name in &remove {
                    stream.remove_request_header(name);
                }
                for (name, value) in &set {
                    if !stream.set_request_header(name, value) {
                        // An identity we cannot write is not an allow.
                        host::log(
                            Level::Warn,
                            &format!("portcullis: Envoy refused the identity header `{name}`; denied (500)"),
                        );
                        stream.send_response(500, &[], "");
                        return Next::Stop;
                    }
                }
                if let Some(path) = path {
                    stream.set_request_header(":path", &path);
                }
                Next::Continue
            }
            Written::Reply {
                status,
                headers,
                body,
            } => {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                stream.send_response(status, &headers, &body);
                Next::Stop
            }
        }
    }
}

/// `path?query` without the query parameters named in `remove` (compared after percent-decoding their
/// names, as ext_authz's `query_parameters_to_remove` does by exact name).
fn without_query_parameters(path: &str, query: &str, remove: &[String]) -> String {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !remove.iter().any(|r| r == name)
        })
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::config::MemoryFiles;
    use portcullis_core::Config;

    /// A local reply: status, headers, body.
    type Reply = (u16, Vec<(String, String)>, String);

    /// A stream that records what the filter wrote.
    #[derive(Default)]
    struct Fake {
        headers: Vec<(String, String)>,
        reply: Option<Reply>,
        counted: Vec<(String, String, String)>,
    }

    impl Fake {
        fn get(path: &str, extra: &[(&str, &str)]) -> Fake {
            let mut headers = vec![
                (":method".to_owned(), "GET".to_owned()),
                (":path".to_owned(), path.to_owned()),
                (":authority".to_owned(), "api.example".to_owned()),
                (":scheme".to_owned(), "http".to_owned()),
            ];
            headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            Fake {
                headers,
                reply: None,
                counted: Vec::new(),
            }
        }

        fn header(&self, name: &str) -> Vec<&str> {
            self.headers
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect()
        }
    }

    impl Stream for Fake {
        fn with_request_headers<R>(&self, f: impl FnOnce(Headers<'_>) -> R) -> R {
            f(Headers::List(&self.headers))
        }
        fn set_request_header(&mut self, name: &str, value: &str) -> bool {
            self.remove_request_header(name);
            self.headers.push((name.to_owned(), value.to_owned()));
            true
        }
        fn remove_request_header(&mut self, name: &str) {
            self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        }
        fn count_decision(&mut self, decision: &str, reason: &str, route: &str, _: u64) {
            self.counted
                .push((decision.to_owned(), reason.to_owned(), route.to_owned()));
        }
        fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &str) {
            self.reply = Some((
                status,
                headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                body.to_owned(),
            ));
        }
    }

    const API_KEY: &str = "k-3f9a1c0e5b7d2468";

    fn shared() -> Shared {
        let yaml = format!(
            r#"
providers:
  - name: keys
    type: api_key
    credential: {{ header: x-api-key }}
    keys:
      - {{ sha256: "{}", principal: ci-bot, attributes: {{ scopes: [read:data] }} }}
routes:
  - name: admin
    match: {{ path_prefix: /admin }}
    require: {{ scopes: {{ all_of: [admin:data] }} }}
"#,
            portcullis_core::hash_key(API_KEY)
        );
        let config = Config::from_yaml_str(&yaml).unwrap();
        let env = Env::offline(
            portcullis_core::Clock::manual(1_700_000_000),
            MemoryFiles::default(),
        );
        Shared::new(Runtime::build(&config, &env).unwrap())
    }

    #[test]
    fn an_allow_sets_the_identity_and_removes_client_copies() {
        let shared = shared();
        let mut stream = Fake::get(
            "/data",
            &[
                ("x-api-key", API_KEY),
                ("x-auth-subject", "spoofed-admin"),
                ("X-Auth-Role", "admin"),
            ],
        );
        assert!(matches!(
            on_request_headers(&shared, None, &mut stream),
            Next::Continue
        ));
        assert!(stream.reply.is_none());
        assert_eq!(stream.header("x-auth-subject"), ["ci-bot"]);
        // A client header under the identity prefix that the identity does not set is removed too.
        assert!(
            stream.header("X-Auth-Role").is_empty(),
            "{:?}",
            stream.headers
        );
    }

    #[test]
    fn a_missing_credential_is_a_401_with_a_challenge() {
        let shared = shared();
        let mut stream = Fake::get("/data", &[("x-auth-subject", "spoofed")]);
        assert!(matches!(
            on_request_headers(&shared, None, &mut stream),
            Next::Stop
        ));
        let (status, headers, _) = stream.reply.unwrap();
        assert_eq!(status, 401);
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "www-authenticate" && v.contains("realm=\"portcullis\"")),
            "{headers:?}"
        );
    }

    #[test]
    fn a_wrong_key_and_a_missing_scope_are_denied() {
        let shared = shared();
        let mut wrong = Fake::get("/data", &[("x-api-key", "not-the-key-000000")]);
        assert!(matches!(
            on_request_headers(&shared, None, &mut wrong),
            Next::Stop
        ));
        assert_eq!(wrong.reply.unwrap().0, 401);
        let mut scope = Fake::get("/admin/x", &[("x-api-key", API_KEY)]);
        assert!(matches!(
            on_request_headers(&shared, None, &mut scope),
            Next::Stop
        ));
        assert_eq!(scope.reply.unwrap().0, 403);
        assert_eq!(scope.counted.len(), 1, "one decision, counted once");
        let (decision, reason, route) = &scope.counted[0];
        assert_eq!((decision.as_str(), route.as_str()), ("deny", "admin"));
        assert!(!reason.is_empty());
    }

    /// An upstream whose one call waits until the test answers it (`None`: the call fails).
    struct Gated {
        answer: std::sync::Mutex<Option<futures_util::future::BoxFuture<'static, Option<u16>>>>,
    }

    impl portcullis_core::providers::http::Upstream for Gated {
        fn client(
            &self,
            _: &portcullis_core::config::TlsSettings,
            _: portcullis_core::providers::http::Purpose,
            _: &portcullis_core::Sources,
        ) -> Result<
            Arc<dyn portcullis_core::providers::http::HttpClient>,
            portcullis_core::providers::http::TlsError,
        > {
            let answer = self.answer.lock().unwrap().take();
            Ok(Arc::new(GatedClient(std::sync::Mutex::new(answer))))
        }
    }

    struct GatedClient(
        std::sync::Mutex<Option<futures_util::future::BoxFuture<'static, Option<u16>>>>,
    );

    impl portcullis_core::providers::http::HttpClient for GatedClient {
        fn send(
            &self,
            _: portcullis_core::providers::http::HttpRequest,
        ) -> futures_util::future::BoxFuture<
            'static,
            Result<
                portcullis_core::providers::http::HttpResponse,
                portcullis_core::providers::http::UpstreamError,
            >,
        > {
            use portcullis_core::providers::http::{HttpResponse, UpstreamError};
            let answer = self.0.lock().unwrap().take();
            Box::pin(async move {
                match answer {
                    Some(answer) => match answer.await {
                        Some(status) => Ok(HttpResponse {
                            status,
                            headers: vec![("content-type".into(), "application/json".into())],
                            body:
                                br#"{"principal": "web-user", "attributes": {"roles": ["reader"]}}"#
                                    .to_vec(),
                        }),
                        None => Err(UpstreamError::RequestFailed("connection refused".into())),
                    },
                    None => Err(UpstreamError::RequestFailed("called twice".into())),
                }
            })
        }
    }

    /// A webhook provider whose endpoint answers when the returned sender says (a status, or `None`
    /// for a failed call).
    fn webhook() -> (Shared, tokio::sync::oneshot::Sender<Option<u16>>) {
        let (tx, rx) = tokio::sync::oneshot::channel::<Option<u16>>();
        let answer: futures_util::future::BoxFuture<'static, Option<u16>> =
            Box::pin(async move { rx.await.ok().flatten() });
        let upstream = Gated {
            answer: std::sync::Mutex::new(Some(answer)),
        };
        let config = Config::from_yaml_str(
            "providers: [{name: hook, type: webhook, endpoint: 'http://127.0.0.1:9/check'}]",
        )
        .unwrap();
        let env = Env::new(
            portcullis_core::Clock::manual(1_700_000_000),
            portcullis_core::Sources::new(Arc::new(MemoryFiles::default())),
            Arc::new(upstream),
            Arc::new(portcullis_core::env::NoKeyStorage),
        );
        (Shared::new(Runtime::build(&config, &env).unwrap()), tx)
    }

    fn pause(shared: &Shared, stream: &mut Fake) -> Pending {
        match on_request_headers(shared, None, stream) {
            Next::Pause(pending) => pending,
            other => panic!("expected a pause, got {other:?}"),
        }
    }

    #[test]
    fn a_decision_that_waits_for_its_upstream_pauses_and_its_answer_is_written_after() {
        let (shared, answer) = webhook();
        let mut stream = Fake::get(
            "/data",
            &[
                ("authorization", "Bearer opaque-token-1"),
                ("x-auth-subject", "spoofed"),
            ],
        );
        let pending = pause(&shared, &mut stream);
        // Nothing is written or counted while the decision waits, and the copy of the headers it
        // holds does not depend on the stream's.
        assert!(stream.reply.is_none() && stream.counted.is_empty());
        assert_eq!(stream.header("x-auth-subject"), ["spoofed"]);
        stream.headers.clear();
        stream
            .headers
            .push(("x-auth-subject".into(), "spoofed".into()));

        answer.send(Some(200)).unwrap();
        let decided = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(pending.decision);
        assert!(matches!(decided.write(&mut stream), Next::Continue));
        assert!(stream.reply.is_none());
        assert_eq!(stream.header("x-auth-subject"), ["web-user"]);
        assert_eq!(stream.counted.len(), 1);
        assert_eq!(stream.counted[0].0, "allow");
    }

    #[test]
    fn a_paused_decision_whose_upstream_fails_answers_503() {
        let (shared, answer) = webhook();
        let mut stream = Fake::get("/data", &[("authorization", "Bearer opaque-token-2")]);
        let pending = pause(&shared, &mut stream);
        answer.send(None).unwrap();
        let decided = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(pending.decision);
        assert!(matches!(decided.write(&mut stream), Next::Stop));
        assert_eq!(stream.reply.unwrap().0, 503);
    }

    #[test]
    fn a_paused_decision_runs_on_the_background_runtime_and_a_panic_there_is_reported() {
        let (shared, answer) = webhook();
        let mut stream = Fake::get("/data", &[("authorization", "Bearer opaque-token-3")]);
        let pending = pause(&shared, &mut stream);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        crate::runner::resume(pending.decision, move |result| {
            let _ = done_tx.send(result.map(|decided| {
                let mut stream = Fake::default();
                let next = decided.write(&mut stream);
                (matches!(next, Next::Continue), stream.counted)
            }));
        });
        answer.send(Some(403)).unwrap();
        let (continued, counted) = done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap()
            .unwrap();
        assert!(!continued, "a 403 from the webhook is not an allow");
        assert_eq!(counted[0].0, "deny");

        let panicking = Pending {
            decision: Box::pin(async {
                tokio::task::yield_now().await;
                panic!("a decision that panics after its pause")
            }),
        };
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        crate::runner::resume(panicking.decision, move |result| {
            let _ = done_tx.send(result.err());
        });
        assert_eq!(
            done_rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap(),
            Some(crate::runner::Failed::Panicked)
        );
    }

    #[test]
    fn a_per_route_config_picks_the_route_or_switches_the_filter_off() {
        let shared = shared();
        let admin = PerRoute::Route("admin".into());
        // /data matches the default route (read:data is enough); on `admin` it needs admin:data.
        let mut stream = Fake::get("/data", &[("x-api-key", API_KEY)]);
        assert!(matches!(
            on_request_headers(&shared, Some(&admin), &mut stream),
            Next::Stop
        ));
        assert_eq!(stream.reply.unwrap().0, 403);
        assert_eq!(stream.counted[0].2, "admin");
        // And the other way: a path under /admin decided on the default route.
        let default = PerRoute::Route("default".into());
        let mut stream = Fake::get("/admin/x", &[("x-api-key", API_KEY)]);
        assert!(matches!(
            on_request_headers(&shared, Some(&default), &mut stream),
            Next::Continue
        ));
        assert_eq!(stream.header("x-auth-subject"), ["ci-bot"]);

        // Disabled: nothing decided, nothing written, client headers left as they are.
        let mut stream = Fake::get("/admin/x", &[("x-auth-subject", "anyone")]);
        assert!(matches!(
            on_request_headers(&shared, Some(&PerRoute::Disabled), &mut stream),
            Next::Continue
        ));
        assert!(stream.reply.is_none() && stream.counted.is_empty());
        assert_eq!(stream.header("x-auth-subject"), ["anyone"]);
    }

    #[test]
    fn a_per_route_config_naming_an_unknown_route_is_a_500() {
        let shared = shared();
        let unknown = PerRoute::Route("billing".into());
        let mut stream = Fake::get("/data", &[("x-api-key", API_KEY)]);
        assert!(matches!(
            on_request_headers(&shared, Some(&unknown), &mut stream),
            Next::Stop
        ));
        assert_eq!(stream.reply.unwrap().0, 500);
        assert_eq!(stream.counted[0].1, "unknown_route");
    }

    /// Writes `text` to `path` with a modification time of its own, old enough to be past the
    /// watcher's quiet period.
    fn write_old(path: &std::path::Path, text: &str, age_seconds: u64) {
        std::fs::write(path, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(
                std::time::SystemTime::now() - std::time::Duration::from_secs(age_seconds),
            )
            .unwrap();
    }

    fn keys_config(scopes: &str) -> String {
        format!(
            "providers: [{{name: keys, type: api_key, credential: {{header: x-api-key}}, keys: [{{sha256: '{}', principal: ci-bot, attributes: {{scopes: [{scopes}]}}}}]}}]\nroutes: [{{name: admin, match: {{path_prefix: /admin}}, require: {{scopes: {{all_of: [admin:data]}}}}}}]\n",
            portcullis_core::hash_key(API_KEY)
        )
    }

    fn status(shared: &Shared, path: &str) -> u16 {
        let mut stream = Fake::get(path, &[("x-api-key", API_KEY)]);
        match on_request_headers(shared, None, &mut stream) {
            Next::Continue => 200,
            Next::Stop => stream.reply.unwrap().0,
            Next::Pause(_) => panic!("an API key decision does not pause"),
        }
    }

    /// Polls until `done` or a generous deadline.
    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    #[test]
    fn a_changed_config_file_is_reloaded_and_a_broken_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.yaml");
        write_old(&path, &keys_config("read:data"), 3600);
        let filter_config = format!("config_file: '{}'", path.display());
        let shared = Shared::from_filter_config(filter_config.as_bytes()).unwrap();
        assert!(shared.is_watched());
        assert_eq!(status(&shared, "/admin/x"), 403);

        // The key gains admin:data: once reloaded, /admin is allowed.
        write_old(&path, &keys_config("read:data, admin:data"), 3600);
        eventually("the changed file was not reloaded", || {
            shared.reload_counts().0 == 1
        });
        assert_eq!(status(&shared, "/admin/x"), 200);

        // A broken file is refused and the running configuration keeps deciding.
        write_old(&path, "providers: [{name: keys, type: api_key", 3600);
        eventually("the broken file was not looked at", || {
            shared.reload_counts().1 == 1
        });
        assert_eq!(shared.reload_counts().0, 1);
        assert_eq!(status(&shared, "/admin/x"), 200);

        // A change within the quiet period waits for it (a writer may not be done).
        write_old(&path, &keys_config("read:data"), 0);
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert_eq!(
            shared.reload_counts(),
            (1, 1),
            "taken within the quiet period"
        );
        eventually("the settled file was not reloaded", || {
            shared.reload_counts().0 == 2
        });
        assert_eq!(status(&shared, "/admin/x"), 403);
    }

    #[test]
    fn credential_query_parameters_are_cut_by_name() {
        let remove = ["access_token".to_owned()];
        assert_eq!(
            without_query_parameters("/a", "x=1&access_token=t&y=2", &remove),
            "/a?x=1&y=2"
        );
        assert_eq!(
            without_query_parameters("/a", "access_token=t", &remove),
            "/a"
        );
    }
}
