//! The module's background: one small tokio runtime (one worker thread, started with the first filter
//! config that needs it and kept for the life of the process) on which
//! - each filter config's key sets behind `jwks_uri` or discovery are fetched and refreshed
//!   ([`Background`], stopped when the config is destroyed);
//! - every upstream HTTP call is made ([`HttpUpstream`], over reqwest). A call is spawned onto the
//!   runtime and awaited through a channel, so the future a decision holds can be polled on Envoy's
//!   worker thread, which has no tokio context.
//!
//! Envoy's workers never block on it: a decision that still waits for a call after its inline poll
//! answers 503 (see `filter`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use portcullis_core::config::{Sources, TlsSettings};
use portcullis_core::providers::http::{
    url_allowed, BearerToken, HttpClient, HttpRequest, HttpResponse, Method, Purpose, TlsError,
    Upstream, UpstreamError,
};
use portcullis_core::providers::jwks::KeyStore;
use portcullis_core::Runtime;

/// The process's background runtime, or why it could not be started.
fn handle() -> Result<&'static tokio::runtime::Handle, &'static str> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("portcullis-bg")
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
        .map(tokio::runtime::Runtime::handle)
        .ok_or("cannot start the module's background thread")
}

/// One filter config's background tasks; dropping it stops them.
pub struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    /// Starts the refreshers of `runtime`'s remote key sets.
    pub fn spawn(runtime: &Runtime) -> Result<Background, &'static str> {
        let remote: Vec<_> = runtime
            .key_stores()
            .filter(|s| s.is_remote())
            .cloned()
            .collect();
        if remote.is_empty() {
            return Ok(Background { tasks: Vec::new() });
        }
        let handle = handle()?;
        Ok(Background {
            tasks: remote
                .into_iter()
                .map(|store| handle.spawn(refresh_keys(store)))
                .collect(),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Fetches a key set at once, then on the schedule the store gives (its cache lifetime, backing off
/// on failures without dropping the last good keys).
async fn refresh_keys(store: Arc<KeyStore>) {
    let mut delay = store.first_refresh_in().await;
    let mut failures: u32 = 0;
    loop {
        tokio::time::sleep(delay).await;
        delay = store.refresh(&mut failures).await;
    }
}

/// Upstream HTTP for providers: reqwest on the background runtime.
pub struct HttpUpstream {
    calls: reqwest::Client,
    keys: reqwest::Client,
}

impl HttpUpstream {
    pub fn new() -> Result<HttpUpstream, String> {
        let build = |purpose| builder(purpose).build().map_err(|e| e.to_string());
        Ok(HttpUpstream {
            calls: build(Purpose::Calls)?,
            keys: build(Purpose::Keys)?,
        })
    }
}

impl Upstream for HttpUpstream {
    /// The shared client when `tls` is the default; else a client of its own trusting only `ca_file`'s
    /// CAs, or (dangerously) any certificate.
    fn client(
        &self,
        tls: &TlsSettings,
        purpose: Purpose,
        sources: &Sources,
    ) -> Result<Arc<dyn HttpClient>, TlsError> {
        let client = if let Some(path) = &tls.ca_file {
            let pem = sources.read(path).map_err(|source| TlsError::Read {
                path: path.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| TlsError::NoCertificate(path.clone()))?;
            builder(purpose)
                .tls_certs_only(certs)
                .build()
                .map_err(|e| TlsError::Client(e.into()))?
        } else if tls.insecure_skip_verify {
            builder(purpose)
                .tls_danger_accept_invalid_certs(true)
                .build()
                .map_err(|e| TlsError::Client(e.into()))?
        } else {
            match purpose {
                Purpose::Calls => self.calls.clone(),
                Purpose::Keys => self.keys.clone(),
            }
        };
        Ok(Arc::new(Client(client)))
    }
}

/// Calls follow no redirects (a 307 must not re-POST a secret elsewhere); key fetches at most 3, each
/// to an allowed URL.
fn builder(purpose: Purpose) -> reqwest::ClientBuilder {
    let redirects = match purpose {
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
        .user_agent(concat!("portcullis-envoy/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .redirect(redirects)
}

struct Client(reqwest::Client);

impl HttpClient for Client {
    fn send(
        &self,
        request: HttpRequest,
    ) -> BoxFuture<'static, Result<HttpResponse, UpstreamError>> {
        let client = self.0.clone();
        let handle = match handle() {
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
        builder = builder.header("authorization", bearer_header(bearer).await?);
    }
    if let Some(timeout) = request.timeout {
        builder = builder.timeout(timeout);
    }
    if !request.body.is_empty() {
        builder = builder.body(request.body);
    }
    let mut response = builder
        .send()
        .await
        .map_err(|e| UpstreamError::RequestFailed(e.into()))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let mut body = Vec::new();
    if response.status().is_success() {
        let limit = request.max_body;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(UpstreamError::TooLarge(limit));
        }
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
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// A file is read at every call, so a rotated token (a projected service-account token) is picked up.
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
