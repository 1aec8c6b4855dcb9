//! Upstream calls over reqwest: one shared client per purpose (introspection, webhook, GitHub and
//! TokenReview calls follow no redirects; discovery and key sets at most 3, each to an allowed URL), a
//! client of its own for a provider with `tls` settings, bounded bodies, bearer token files read at
//! every call.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::{Sources, TlsSettings};
use crate::providers::http::{
    url_allowed, BearerToken, HttpClient, HttpRequest, HttpResponse, Method, Purpose, TlsError,
    Upstream, UpstreamError,
};

/// The server's [`Upstream`].
#[derive(Clone)]
pub struct ReqwestUpstream {
    calls: reqwest::Client,
    keys: reqwest::Client,
}

impl Default for ReqwestUpstream {
    fn default() -> ReqwestUpstream {
        ReqwestUpstream::new()
    }
}

// === impl ReqwestUpstream ===

impl ReqwestUpstream {
    pub fn new() -> ReqwestUpstream {
        ReqwestUpstream {
            calls: builder(Purpose::Calls)
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
            keys: builder(Purpose::Keys)
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
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
            shared.clone()
        };
        Ok(Arc::new(ReqwestClient(client)))
    }
}

fn builder(purpose: Purpose) -> reqwest::ClientBuilder {
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
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .redirect(redirects)
}

/// One reqwest client.
struct ReqwestClient(reqwest::Client);

impl HttpClient for ReqwestClient {
    fn send(
        &self,
        request: HttpRequest,
    ) -> BoxFuture<'static, Result<HttpResponse, UpstreamError>> {
        let client = self.0.clone();
        Box::pin(async move {
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
        })
    }
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
