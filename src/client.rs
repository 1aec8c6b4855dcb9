//! The `check` command: sends one Check to a running server and describes the answer as JSON.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::pb::auth::authorization_client::AuthorizationClient;
use crate::pb::auth::{
    attribute_context, check_response, AttributeContext, CheckRequest, CheckResponse,
};
use crate::pb::core::HeaderValueOption;
use crate::pb::json;

/// What the server answered, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// The server answered that it could not decide (an error answer).
    Undecided,
}

/// Why the check could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("`{0}` is not a valid server address (expected e.g. http://127.0.0.1:9001)")]
    BadAddress(String),
    #[error(
        "`{0}` has no scheme: write `http://{0}`, or `https://{0}` for a server with `server.tls` \
         (the scheme is not guessed: plain text to a TLS server fails with a less clear error)"
    )]
    MissingScheme(String),
    #[error(
        "`{0}`: the scheme must be http:// or https:// (https:// for a server with `server.tls`)"
    )]
    UnsupportedScheme(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the Check call failed: {0}")]
    Call(#[from] tonic::Status),
    #[error("header `{0}` is not `name: value`")]
    BadHeader(String),
    #[error("context extension `{0}` is not `key=value`")]
    BadContextExtension(String),
    #[error("{0}")]
    Tls(String),
}

/// TLS for an `https://` address (a server with `server.tls`): the CA that signed its certificate and,
/// for a server that requires one (`client_ca_file`), a client certificate and its key. PEM files.
#[derive(Debug, Default, Clone)]
pub struct ClientTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

// === impl ClientTls ===

impl ClientTls {
    fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    fn config(&self) -> Result<rustls::ClientConfig, AskError> {
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| AskError::Tls(format!("cannot read `{}`: {e}", path.display())))
        };
        let ca = self.ca_file.as_ref().ok_or_else(|| {
            AskError::Tls(
                "an https:// address needs --ca-file (the CA of the server's certificate)"
                    .to_owned(),
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&read(ca)?) {
            let cert = cert.map_err(|e| AskError::Tls(format!("`{}`: {e}", ca.display())))?;
            roots
                .add(cert)
                .map_err(|e| AskError::Tls(format!("`{}`: {e}", ca.display())))?;
        }
        if roots.is_empty() {
            return Err(AskError::Tls(format!(
                "`{}` holds no PEM certificate",
                ca.display()
            )));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| AskError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_slice_iter(&read(cert)?)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| AskError::Tls(format!("`{}`: {e}", cert.display())))?;
                let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
                    .map_err(|e| AskError::Tls(format!("`{}`: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| AskError::Tls(format!("client certificate: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(AskError::Tls(
                    "--cert-file and --key-file go together".to_owned(),
                ))
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// Connects over TCP and TLS to the endpoint's host (its name is checked against the certificate).
#[derive(Clone)]
struct TlsConnect {
    connector: tokio_rustls::TlsConnector,
}

impl tower::Service<http::Uri> for TlsConnect {
    type Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = self.connector.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other("the address has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone()).map_err(std::io::Error::other)?;
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            Ok(TokioIo::new(connector.connect(name, tcp).await?))
        })
    }
}

/// One request to ask about.
pub struct Ask<'a> {
    pub addr: &'a str,
    pub headers: &'a [String],
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    /// `key=value` pairs, sent as Envoy's per-route `context_extensions`.
    pub context_extensions: &'a [String],
}

/// Builds the CheckRequest Envoy would send: lower-case header names, repeated headers joined with `,`.
pub fn check_request(ask: &Ask<'_>) -> Result<CheckRequest, AskError> {
    let mut headers: HashMap<String, String> = HashMap::new();
    for line in ask.headers {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| AskError::BadHeader(line.clone()))?;
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(AskError::BadHeader(line.clone()));
        }
        let value = value.trim().to_owned();
        headers
            .entry(name)
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let mut context_extensions = HashMap::new();
    for pair in ask.context_extensions {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| AskError::BadContextExtension(pair.clone()))?;
        context_extensions.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(CheckRequest {
        attributes: Some(AttributeContext {
            context_extensions,
            request: Some(attribute_context::Request {
                time: None,
                http: Some(attribute_context::HttpRequest {
                    method: ask.method.to_ascii_uppercase(),
                    path: ask.path.to_owned(),
                    host: ask.host.to_owned(),
                    scheme: "http".to_owned(),
                    protocol: "HTTP/1.1".to_owned(),
                    headers,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    })
}

pub async fn ask(ask: &Ask<'_>) -> Result<(Verdict, Value), AskError> {
    ask_over(ask, &ClientTls::default()).await
}

/// As [`ask`]; an `https://` address is reached over TLS with `tls`.
pub async fn ask_over(ask: &Ask<'_>, tls: &ClientTls) -> Result<(Verdict, Value), AskError> {
    let request = check_request(ask)?;
    let channel = connect(ask.addr, tls).await?;
    let response = AuthorizationClient::new(channel)
        .check(request)
        .await?
        .into_inner();
    Ok(describe(&response))
}

/// Whether the server at `addr` reports the overall health service ("") SERVING: every provider can
/// decide and it is not draining.
pub async fn serving(addr: &str, tls: &ClientTls) -> Result<bool, AskError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let channel = connect(addr, tls).await?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await?
        .into_inner()
        .status;
    Ok(status == ServingStatus::Serving as i32)
}

/// A channel to `addr`, which must name its scheme (`http://`, or `https://` for a server with
/// `server.tls`): an address without one is refused, not guessed.
async fn connect(addr: &str, tls: &ClientTls) -> Result<tonic::transport::Channel, AskError> {
    match addr.split_once("://") {
        None => return Err(AskError::MissingScheme(addr.to_owned())),
        Some((scheme, _)) if !matches!(scheme, "http" | "https") => {
            return Err(AskError::UnsupportedScheme(addr.to_owned()))
        }
        Some(_) => {}
    }
    let endpoint = tonic::transport::Endpoint::from_shared(addr.to_owned())
        .map_err(|_| AskError::BadAddress(addr.to_owned()))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10));
    let https = endpoint.uri().scheme_str() == Some("https");
    let connected = if https {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls.config()?));
        endpoint
            .connect_with_connector(TlsConnect { connector })
            .await
    } else if tls.is_set() {
        return Err(AskError::Tls(
            "--ca-file, --cert-file and --key-file need an https:// address".to_owned(),
        ));
    } else {
        endpoint.connect().await
    };
    connected.map_err(|source| AskError::Connect {
        addr: addr.to_owned(),
        source,
    })
}

fn header_list(headers: &[HeaderValueOption]) -> Value {
    headers
        .iter()
        .filter_map(|h| {
            let header = h.header.as_ref()?;
            Some(json!({
                "name": header.key,
                "value": header.value,
                "append_action": h.append_action().as_str_name(),
            }))
        })
        .collect()
}

/// The answer as JSON, and what it means.
pub fn describe(response: &CheckResponse) -> (Verdict, Value) {
    let (verdict, mut json) = describe_answer(response);
    if let Some(explanation) = explanation(response) {
        json["explanation"] = explanation;
    }
    (verdict, json)
}

fn explanation(response: &CheckResponse) -> Option<Value> {
    let metadata = response.dynamic_metadata.as_ref()?;
    metadata.fields.get("explanation").map(json::from_value)
}

fn describe_answer(response: &CheckResponse) -> (Verdict, Value) {
    let status = response.status.clone().unwrap_or_default();
    let mut metadata = response
        .dynamic_metadata
        .as_ref()
        .map(|s| Value::Object(json::from_struct(s)))
        .unwrap_or(Value::Null);
    if let Some(m) = metadata.as_object_mut() {
        m.remove("explanation");
    }
    match &response.http_response {
        Some(check_response::HttpResponse::OkResponse(ok)) if status.code == 0 => (
            Verdict::Allowed,
            json!({
                "decision": "allowed",
                "grpc_status": status.code,
                "headers_added": header_list(&ok.headers),
                "headers_removed": ok.headers_to_remove,
                "dynamic_metadata": metadata,
            }),
        ),
        Some(check_response::HttpResponse::ErrorResponse(err)) => (
            Verdict::Undecided,
            json!({
                "decision": "error",
                "grpc_status": status.code,
                "message": status.message,
                "status": err.status.as_ref().map(|s| s.code),
                "headers": header_list(&err.headers),
                "body": err.body,
            }),
        ),
        Some(check_response::HttpResponse::DeniedResponse(denied)) => (
            Verdict::Denied,
            json!({
                "decision": "denied",
                "grpc_status": status.code,
                "message": status.message,
                "status": denied.status.as_ref().map(|s| s.code).unwrap_or(403),
                "headers": header_list(&denied.headers),
                "body": denied.body,
            }),
        ),
        _ if status.code == 0 => (
            Verdict::Allowed,
            json!({"decision": "allowed", "grpc_status": 0}),
        ),
        _ => (
            Verdict::Denied,
            json!({"decision": "denied", "grpc_status": status.code, "message": status.message, "status": 403}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_are_joined_like_envoy_does() {
        let headers = vec![
            "X-A: 1".to_owned(),
            "x-a: 2".to_owned(),
            "Authorization: Bearer t".to_owned(),
        ];
        let req = check_request(&Ask {
            addr: "",
            headers: &headers,
            method: "get",
            path: "/p?q=1",
            host: "h",
            context_extensions: &[],
        })
        .unwrap();
        let http = req.attributes.unwrap().request.unwrap().http.unwrap();
        assert_eq!(http.headers["x-a"], "1,2");
        assert_eq!(http.headers["authorization"], "Bearer t");
        assert_eq!(http.method, "GET");
        assert!(matches!(
            check_request(&Ask {
                addr: "",
                headers: &["nocolon".to_owned()],
                method: "GET",
                path: "/",
                host: "h",
                context_extensions: &[]
            }),
            Err(AskError::BadHeader(_))
        ));
    }
}
