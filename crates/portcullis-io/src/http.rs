//! Upstream calls over reqwest: one shared client per purpose (introspection, webhook, GitHub and
//! TokenReview calls follow no redirects; discovery and key sets at most 3, each to an allowed URL), a
//! client of its own for a provider with `tls` settings, bounded bodies, bearer token files read at
//! every call. The server makes its calls on its own tokio runtime; a host whose decisions are polled
//! outside tokio (Envoy's workers) makes them on a background runtime ([`ReqwestUpstream::calls_on`]).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use portcullis_core::config::{Sources, TlsSettings};
use portcullis_core::providers::http::{
    url_allowed, BearerToken, HttpClient, HttpRequest, HttpResponse, Method, Purpose, TlsError,
    Upstream, UpstreamError,
};

/// The tokio runtime a host's calls run on, found (or started) at the first call: the runtime, or why it
/// cannot run (the call then fails as an unavailable upstream).
pub type CallRuntime = fn() -> Result<&'static tokio::runtime::Handle, &'static str>;

/// The server's [`Upstream`] (and the Envoy module's).
#[derive(Clone)]
pub struct ReqwestUpstream {
    calls: reqwest::Client,
    keys: reqwest::Client,
    /// The `User-Agent` of every request.
    user_agent: &'static str,
    /// Where calls run: `None`, in the task that awaits them (the server's runtime).
    runtime: Option<CallRuntime>,
}

impl Default for ReqwestUpstream {
    fn default() -> ReqwestUpstream {
        ReqwestUpstream::new()
    }
}

// === impl ReqwestUpstream ===

impl ReqwestUpstream {
    /// The server's clients (`User-Agent: portcullis/VERSION`), calling from the awaiting task.
    pub fn new() -> ReqwestUpstream {
        const USER_AGENT: &str = concat!("portcullis/", env!("CARGO_PKG_VERSION"));
        ReqwestUpstream {
            calls: builder(Purpose::Calls, USER_AGENT)
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
            keys: builder(Purpose::Keys, USER_AGENT)
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
            user_agent: USER_AGENT,
            runtime: None,
        }
    }

    /// Clients sending `user_agent`; an error when reqwest cannot build them (its TLS backend does not
    /// start), for a host that refuses its configuration then rather than fall back.
    pub fn with_user_agent(user_agent: &'static str) -> Result<ReqwestUpstream, reqwest::Error> {
        Ok(ReqwestUpstream {
            calls: builder(Purpose::Calls, user_agent).build()?,
            keys: builder(Purpose::Keys, user_agent).build()?,
            user_agent,
            runtime: None,
        })
    }

    /// Makes every call on the runtime `runtime` gives, handing its result back through a channel: the
    /// future a decision holds can then be polled on a thread with no tokio context (Envoy's workers).
    pub fn calls_on(self, runtime: CallRuntime) -> ReqwestUpstream {
        ReqwestUpstream {
            runtime: Some(runtime),
            ..self
        }
    }
}

impl Upstream for ReqwestUpstream {
    /// The shared client when `tls` is the default; else a client of its own trusting only `ca_file`'s
    /// CAs, or (dangerously) any certificate.
    fn client(
        &self,
        tls: &TlsSettings,
        purpose: Purpose,
        sources: &Sources,
    ) -> Result<Arc<dyn HttpClient>, TlsError> {
        let shared = match purpose {
            Purpose::Calls => &self.calls,
            Purpose::Keys => &self.keys,
        };
        let client = if let Some(path) = &tls.ca_file {
            let pem = sources.read(path).map_err(|source| TlsError::Read {
                path: path.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| TlsError::NoCertificate(path.clone()))?;
            builder(purpose, self.user_agent)
                .tls_certs_only(certs)
                .build()
                .map_err(|e| TlsError::Client(e.into()))?
        } else if tls.insecure_skip_verify {
            builder(purpose, self.user_agent)
                .tls_danger_accept_invalid_certs(true)
                .build()
                .map_err(|e| TlsError::Client(e.into()))?
        } else {
            shared.clone()
        };
        Ok(Arc::new(ReqwestClient {
            client,
            runtime: self.runtime,
        }))
    }
}

fn builder(purpose: Purpose, user_agent: &'static str) -> reqwest::ClientBuilder {
    let redirects = match purpose {
        // A 307 must not re-POST a token and client secret to another host: a 3xx is an unavailable
        // upstream.
        Purpose::Calls => reqwest::redirect::Policy::none(),
        Purpose::Keys => reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= 3 {
                attempt.error("too many redirects")
            } else if !url_allowed(attempt.url(), false) {
                attempt.error("redirect to a plain-HTTP URL")
            } else {
                attempt.follow()
            }
        }),
    };
    reqwest::Client::builder()
        .user_agent(user_agent)
        .connect_timeout(Duration::from_secs(5))
        .redirect(redirects)
}

/// One reqwest client, and where its calls run.
struct ReqwestClient {
    client: reqwest::Client,
    runtime: Option<CallRuntime>,
}

impl HttpClient for ReqwestClient {
    fn send(
        &self,
        request: HttpRequest,
    ) -> BoxFuture<'static, Result<HttpResponse, UpstreamError>> {
        let client = self.client.clone();
        let Some(runtime) = self.runtime else {
            return Box::pin(send(client, request));
        };
        let handle = match runtime() {
            Ok(handle) => handle,
            Err(why) => {
                return Box::pin(std::future::ready(Err(UpstreamError::RequestFailed(
                    why.into(),
                ))))
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        handle.spawn(async move {
            let _ = tx.send(send(client, request).await);
        });
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(UpstreamError::RequestFailed(
                    "the background call was dropped".into(),
                ))
            })
        })
    }
}

/// Makes one call.
async fn send(
    client: reqwest::Client,
    request: HttpRequest,
) -> Result<HttpResponse, UpstreamError> {
    let mut builder = match request.method {
        Method::Get => client.get(request.url),
        Method::Post => client.post(request.url),
    };
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }
    if let Some((id, secret)) = request.basic_auth {
        builder = builder.basic_auth(id, Some(secret));
    }
    if let Some(bearer) = &request.bearer {
        builder = builder.header(http::header::AUTHORIZATION, bearer_header(bearer).await?);
    }
    if let Some(timeout) = request.timeout {
        builder = builder.timeout(timeout);
    }
    if !request.body.is_empty() {
        builder = builder.body(request.body);
    }
    let response = builder
        .send()
        .await
        .map_err(|e| UpstreamError::RequestFailed(e.into()))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = if response.status().is_success() {
        read_bounded(response, request.max_body).await?
    } else {
        Vec::new()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// The `Authorization` value of a bearer credential: a file is read at every call, so a rotated token
/// (a projected service-account token) is picked up.
async fn bearer_header(token: &BearerToken) -> Result<String, UpstreamError> {
    match token {
        BearerToken::Fixed(secret) => token.header_from(secret.expose()),
        BearerToken::File(path) => {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|_| UpstreamError::TokenFile(path.clone()))?;
            token.header_from(&bytes)
        }
    }
}

/// Reads a response body, refusing more than `limit` bytes (by `Content-Length` and while streaming).
async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, UpstreamError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(UpstreamError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| UpstreamError::RequestFailed(e.into()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(UpstreamError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::{SocketAddr, TcpListener};
    use std::sync::OnceLock;
    use std::task::{Context, Poll, Wake, Waker};

    use portcullis_core::config::MemoryFiles;

    use super::*;

    /// Answers one connection with `response`; the thread returns the request's head.
    fn serve_once(response: &'static str) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            stream.write_all(response.as_bytes()).unwrap();
            String::from_utf8(head).unwrap()
        });
        (addr, served)
    }

    fn get(
        upstream: &ReqwestUpstream,
        addr: SocketAddr,
        max_body: usize,
    ) -> BoxFuture<'static, Result<HttpResponse, UpstreamError>> {
        let sources = Sources::new(Arc::new(MemoryFiles::default()));
        let client = upstream
            .client(&TlsSettings::default(), Purpose::Calls, &sources)
            .unwrap();
        let url = reqwest::Url::parse(&format!("http://{addr}/x")).unwrap();
        client.send(HttpRequest::new(Method::Get, url, max_body))
    }

    /// Polls `future` to its end on this thread, which has no tokio context.
    fn block_on<T>(future: BoxFuture<'static, T>) -> T {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut context = Context::from_waker(&waker);
        let mut future = future;
        loop {
            if let Poll::Ready(value) = future.as_mut().poll(&mut context) {
                return value;
            }
            std::thread::park();
        }
    }

    fn background() -> Result<&'static tokio::runtime::Handle, &'static str> {
        static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        Ok(RUNTIME
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap()
            })
            .handle())
    }

    #[test]
    fn calls_on_a_background_runtime_complete_when_polled_outside_tokio() {
        let (addr, served) =
            serve_once("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello");
        let upstream = ReqwestUpstream::with_user_agent("portcullis-test/1")
            .unwrap()
            .calls_on(background);
        // A plain thread: without `calls_on` reqwest would find no tokio reactor here.
        let response = std::thread::spawn(move || block_on(get(&upstream, addr, 1024)))
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"hello");
        let head = served.join().unwrap().to_ascii_lowercase();
        assert!(head.contains("user-agent: portcullis-test/1\r\n"), "{head}");
    }

    #[test]
    fn a_call_fails_as_unavailable_when_its_runtime_cannot_start() {
        let upstream = ReqwestUpstream::new().calls_on(|| Err("no background thread"));
        let addr = "127.0.0.1:9".parse().unwrap();
        let result = block_on(get(&upstream, addr, 1024));
        assert!(
            matches!(&result, Err(UpstreamError::RequestFailed(e)) if e.to_string() == "no background thread"),
            "{:?}",
            result.map(|r| r.status)
        );
    }

    #[tokio::test]
    async fn a_body_longer_than_max_body_is_refused() {
        let (addr, served) = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-length: 64\r\nconnection: close\r\n\r\n0123456789012345678901234567890123456789012345678901234567890123",
        );
        let result = get(&ReqwestUpstream::new(), addr, 10).await;
        assert!(
            matches!(result, Err(UpstreamError::TooLarge(10))),
            "{:?}",
            result.map(|r| r.status)
        );
        let head = served.join().unwrap().to_ascii_lowercase();
        let agent = concat!("user-agent: portcullis/", env!("CARGO_PKG_VERSION"), "\r\n");
        assert!(head.contains(agent), "{head}");
    }

    #[tokio::test]
    async fn a_call_follows_no_redirect() {
        // Followed, the redirect would go to a port nobody listens on and fail.
        let (addr, served) = serve_once(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:9/elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        let response = get(&ReqwestUpstream::new(), addr, 1024).await.unwrap();
        assert_eq!(response.status, 307);
        assert!(response.body.is_empty());
        served.join().unwrap();
    }
}
