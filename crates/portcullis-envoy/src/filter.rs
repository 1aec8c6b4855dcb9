//! One stream through the filter: Envoy's request headers become our [`RequestView`], the runtime
//! decides inline, and the [`Answer`] is written back onto the stream:
//! - an allow (or a permissive-mode permit): the client's copies of identity headers removed, the
//!   identity headers set, credential query parameters removed from `:path`; the request continues;
//! - a denial: a local reply with the denial's status, `WWW-Authenticate` and body;
//! - "cannot decide": 503, never an allow.
//!
//! The stream is reached through the [`Stream`] trait: Envoy's in production (`ffi`), a fake in tests.

use std::sync::Arc;

use futures_util::FutureExt as _;
use portcullis_core::answer::{Answer, Outcome};
use portcullis_core::{Env, Headers, RequestView, Runtime};

use crate::host::{self, Level};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The request goes on to the next filter.
    Continue,
    /// A local reply was sent: stop here.
    Stop,
}

/// The shared, immutable part of the filter: one per filter config, read by every worker.
pub struct Shared {
    runtime: Arc<Runtime>,
    /// Its key set refreshers and API key file reloaders, stopped when the config goes.
    background: Option<crate::runner::Background>,
}

/// A host failure while building a config, as a config problem.
fn refused(why: &str) -> portcullis_core::ConfigErrors {
    portcullis_core::ConfigErrors(vec![portcullis_core::Problem {
        path: "filter_config".to_owned(),
        message: why.to_owned(),
    }])
}

// === impl Shared ===

impl Shared {
    /// Builds the runtime from the filter config; every problem is logged with its field path and the
    /// config is refused (Envoy then refuses the filter).
    pub fn from_filter_config(filter_config: &[u8]) -> Option<Shared> {
        let result = crate::settings::load(filter_config, &host::ProcessFiles).and_then(|loaded| {
            for (level, note) in &loaded.notes {
                host::log(*level, note);
            }
            let upstream = crate::runner::upstream().map_err(|e| refused(&e))?;
            let clock = portcullis_core::Clock::system();
            let env = Env::new(
                clock.clone(),
                host::sources(),
                Arc::new(upstream),
                Arc::new(portcullis_core::env::NoKeyStorage),
            );
            let runtime = Runtime::build(&loaded.config, &env)?;
            let background = crate::runner::Background::spawn(&runtime, &clock).map_err(refused)?;
            Ok((runtime, background))
        });
        match result {
            Ok((runtime, background)) => {
                let mut shared = Shared::new(runtime);
                shared.background = Some(background);
                Some(shared)
            }
            Err(errors) => {
                host::log(
                    Level::Error,
                    &format!("portcullis: the filter config is refused: {errors}"),
                );
                for problem in &errors.0 {
                    host::log(Level::Error, &format!("portcullis: {problem}"));
                }
                None
            }
        }
    }

    pub fn new(runtime: Runtime) -> Shared {
        Shared {
            runtime: Arc::new(runtime),
            background: None,
        }
    }

    /// The runtime this config decides with.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }
}

/// Decides the request on `stream` and writes the answer. A decision that does not complete inline
/// answers 503 (fail closed).
pub fn on_request_headers(shared: &Shared, stream: &mut impl Stream) -> Next {
    let started = std::time::Instant::now();
    // Decided while the headers are borrowed from Envoy; written after, once nothing borrows them.
    let (written, counted) = stream.with_request_headers(|headers| decide(shared, headers));
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match &counted {
        Some((decision, reason, route)) => stream.count_decision(decision, reason, route, micros),
        None => stream.count_decision("error", "pending_upstream", "", micros),
    }
    written.write(stream)
}

/// The decision's labels for the decision counter; `None`: still pending after the inline poll.
type Counted = Option<(&'static str, &'static str, Arc<str>)>;

/// Decides one request from its headers, into an owned answer.
fn decide(shared: &Shared, headers: Headers<'_>) -> (Written, Counted) {
    #[cfg(feature = "test-panic")]
    if headers.get("x-portcullis-test-panic").is_some() {
        panic!("test-panic: x-portcullis-test-panic asked for a panic");
    }
    let mut view = RequestView::new(
        headers.get(":method").unwrap_or(""),
        headers.get(":path").unwrap_or(""),
        headers.get(":authority").unwrap_or(""),
        headers,
        headers.get("x-request-id").unwrap_or(""),
    );
    view.scheme = headers.get(":scheme").unwrap_or("");
    let runtime = &shared.runtime;
    let Some(verdict) = runtime.authorizer().decide(&view, false).now_or_never() else {
        host::log(
            Level::Warn,
            "portcullis: this decision waits for an upstream call, and the module does not pause requests yet; denied (503)",
        );
        let pending = Written::Reply {
            status: 503,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: r#"{"error":"temporarily_unavailable","error_description":"the authorization decision could not be made"}"#.to_owned(),
        };
        return (pending, None);
    };
    let counted = Some((
        verdict.decision.kind(),
        verdict.decision.reason(),
        Arc::clone(verdict.route.name_shared()),
    ));
    let answer = portcullis_core::answer::answer(&verdict, &view, runtime.answers());
    (Written::from_answer(answer, view.path, view.query), counted)
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
        assert_eq!(on_request_headers(&shared, &mut stream), Next::Continue);
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
        assert_eq!(on_request_headers(&shared, &mut stream), Next::Stop);
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
        assert_eq!(on_request_headers(&shared, &mut wrong), Next::Stop);
        assert_eq!(wrong.reply.unwrap().0, 401);
        let mut scope = Fake::get("/admin/x", &[("x-api-key", API_KEY)]);
        assert_eq!(on_request_headers(&shared, &mut scope), Next::Stop);
        assert_eq!(scope.reply.unwrap().0, 403);
        assert_eq!(scope.counted.len(), 1, "one decision, counted once");
        let (decision, reason, route) = &scope.counted[0];
        assert_eq!((decision.as_str(), route.as_str()), ("deny", "admin"));
        assert!(!reason.is_empty());
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
