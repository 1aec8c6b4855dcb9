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
        let call = async move {
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
        };
        match self.runtime {
            None => Box::pin(call),
            Some(runtime) => on_runtime(runtime, call),
        }
    }
}

/// Runs `call` on the runtime `runtime` gives and awaits its result through a channel, so the future
/// returned needs no tokio context to be polled.
fn on_runtime(
    runtime: CallRuntime,
    call: impl std::future::Future<Output = Result<HttpResponse, UpstreamError>> + Send + 'static,
) -> BoxFuture<'static, Result<HttpResponse, UpstreamError>> {
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
        let _ = tx.send(call.await);
    });
    Box::pin(async move {
        rx.await.unwrap_or_else(|_| {
            Err(UpstreamError::RequestFailed(
                "the background call was dropped".into(),
            ))
        })
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
