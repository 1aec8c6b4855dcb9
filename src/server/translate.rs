//! The one place where Envoy's protobuf meets our types: a `CheckRequest` becomes a [`RequestView`], and a
//! [`Decision`] becomes a `CheckResponse`. It also owns the mapping of outcomes to HTTP and gRPC statuses.

use std::collections::BTreeMap;

use prost_types::value::Kind;
use serde_json::Value;

use crate::config::Config;
use crate::decision::{Decision, Denial, DenyReason, DenyStatus, Identity, Unavailable};
use crate::pb::auth::{
    attribute_context, check_response, CheckRequest, CheckResponse, DeniedHttpResponse,
    OkHttpResponse,
};
use crate::pb::core::{header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption};
use crate::pb::http_type::{HttpStatus, StatusCode};
use crate::pb::rpc::Status;
use crate::request::{Headers, RequestView};

/// gRPC codes (google.rpc.Code) carried in `CheckResponse.status`.
mod code {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Everything about answers that is fixed at start: header names, the plain challenge.
#[derive(Debug, Clone)]
pub struct AnswerSettings {
    prefix: Box<str>,
    subject: Box<str>,
    client_id: Box<str>,
    issuer: Box<str>,
    scopes: Box<str>,
    provider: Box<str>,
    remove_authorization: bool,
    realm: Box<str>,
    /// The scheme of `invalid_token` challenges: the first provider's (usually `Bearer`).
    scheme: Box<str>,
    /// The challenge when no credential was sent: one per scheme the providers read.
    plain_challenge: Box<str>,
}

impl AnswerSettings {
    pub fn from_config(config: &Config) -> AnswerSettings {
        let prefix = config.headers.prefix.as_str();
        let mut schemes: Vec<String> = Vec::new();
        for provider in &config.providers {
            if let Some(scheme) = provider.credential.challenge_scheme() {
                if provider.kind.takes_credential()
                    && !schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme))
                {
                    schemes.push(scheme.to_owned());
                }
            }
        }
        if schemes.is_empty() {
            schemes.push("Bearer".to_owned());
        }
        AnswerSettings {
            prefix: prefix.into(),
            subject: format!("{prefix}subject").into(),
            client_id: format!("{prefix}client-id").into(),
            issuer: format!("{prefix}issuer").into(),
            scopes: format!("{prefix}scopes").into(),
            provider: format!("{prefix}provider").into(),
            remove_authorization: config.headers.remove_authorization,
            realm: config.realm.as_str().into(),
            scheme: schemes[0].as_str().into(),
            plain_challenge: schemes
                .iter()
                .map(|scheme| format!("{scheme} realm=\"{}\"", config.realm))
                .collect::<Vec<_>>()
                .join(", ")
                .into(),
        }
    }
}

/// Envoy's raw header list, when `encode_raw_headers` is on, as owned pairs for [`Headers::List`].
pub fn raw_headers(request: &CheckRequest) -> Option<Vec<(String, String)>> {
    let http = request
        .attributes
        .as_ref()?
        .request
        .as_ref()?
        .http
        .as_ref()?;
    let map = http.header_map.as_ref()?;
    if !http.headers.is_empty() || map.headers.is_empty() {
        return None;
    }
    Some(
        map.headers
            .iter()
            .map(|h| {
                let value = if h.value.is_empty() {
                    String::from_utf8_lossy(&h.raw_value).into_owned()
                } else {
                    h.value.clone()
                };
                (h.key.to_ascii_lowercase(), value)
            })
            .collect(),
    )
}

/// Envoy's filter metadata as JSON, when the request carries any.
pub fn metadata(request: &CheckRequest) -> Option<serde_json::Map<String, Value>> {
    let metadata = request.attributes.as_ref()?.metadata_context.as_ref()?;
    if metadata.filter_metadata.is_empty() {
        return None;
    }
    Some(
        metadata
            .filter_metadata
            .iter()
            .map(|(namespace, s)| (namespace.clone(), Value::Object(struct_to_json(s))))
            .collect(),
    )
}

fn struct_to_json(s: &prost_types::Struct) -> serde_json::Map<String, Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

fn value_to_json(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n).map_or(Value::Null, |n| {
            // Integral numbers (e.g. exp) stay integers, as in the token.
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
                _ => Value::Number(n),
            }
        }),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
    }
}

/// Borrows our view of a check request. `raw` is what [`raw_headers`] returned for it, `metadata` what
/// [`metadata`] did.
pub fn request_view<'a>(
    request: &'a CheckRequest,
    raw: Option<&'a [(String, String)]>,
    metadata: Option<&'a serde_json::Map<String, Value>>,
) -> RequestView<'a> {
    static EMPTY: std::sync::OnceLock<std::collections::HashMap<String, String>> =
        std::sync::OnceLock::new();
    let http: Option<&attribute_context::HttpRequest> = request
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let headers = match (raw, http) {
        (Some(list), _) => Headers::List(list),
        (None, Some(http)) => Headers::Map(&http.headers),
        (None, None) => Headers::Map(EMPTY.get_or_init(Default::default)),
    };
    let field = |f: fn(&'a attribute_context::HttpRequest) -> &'a str| http.map_or("", f);
    let view = RequestView::new(
        field(|h| h.method.as_str()),
        field(|h| h.path.as_str()),
        field(|h| h.host.as_str()),
        headers,
        field(|h| h.id.as_str()),
    );
    let mut view = match request.attributes.as_ref() {
        Some(a) if !a.context_extensions.is_empty() => {
            view.with_context_extensions(&a.context_extensions)
        }
        _ => view,
    };
    if let Some(source) = request.attributes.as_ref().and_then(|a| a.source.as_ref()) {
        view.peer_principal = &source.principal;
        view.peer_certificate = &source.certificate;
    }
    view.metadata = metadata;
    view
}

/// Builds the answer Envoy acts on.
pub fn check_response(
    decision: &Decision,
    request: &RequestView<'_>,
    settings: &AnswerSettings,
) -> CheckResponse {
    match decision {
        Decision::Allow(identity) => allow(identity, request, settings),
        Decision::Deny(denial) => deny(denial, settings),
        Decision::Error(why) => error(*why),
    }
}

fn header(key: &str, value: impl Into<String>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.into(),
            raw_value: Vec::new(),
        }),
        // Explicit: Envoy 1.37 honours the enum default (append), which would keep a client-sent value
        // beside ours.
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn allow(identity: &Identity, request: &RequestView<'_>, s: &AnswerSettings) -> CheckResponse {
    let mut headers = Vec::with_capacity(4 + identity.headers.len());
    if let Some(subject) = &identity.subject {
        headers.push(header(&s.subject, subject.as_str()));
    }
    if let Some(client_id) = &identity.client_id {
        headers.push(header(&s.client_id, client_id.as_str()));
    }
    if !identity.issuer.is_empty() {
        headers.push(header(&s.issuer, &*identity.issuer));
    }
    if !identity.scopes.is_empty() {
        headers.push(header(&s.scopes, identity.scopes.as_str()));
    }
    headers.push(header(&s.provider, &*identity.provider));
    for (name, value) in &identity.headers {
        headers.push(header(name, value.as_str()));
    }
    // Attributes (claims_mapping, webhook and API key attributes): `<prefix><name>`, values joined by `,`.
    for (name, values) in &identity.attributes {
        if values.is_empty() || !crate::config::is_header_name(name) {
            continue;
        }
        if crate::config::BUILTIN_HEADER_SUFFIXES.contains(&name.as_str()) {
            continue;
        }
        let key = format!("{}{name}", s.prefix);
        if headers
            .iter()
            .any(|h| h.header.as_ref().is_some_and(|h| h.key == key))
        {
            continue;
        }
        headers.push(header(&key, values.join(",")));
    }

    // Every client header under the prefix goes, except those we overwrite: removing one we also set
    // would remove ours too, whichever order Envoy applies the two lists in.
    let mut headers_to_remove: Vec<String> = Vec::new();
    for name in request.headers.names() {
        let is_ours = name.len() >= s.prefix.len()
            && name.as_bytes()[..s.prefix.len()].eq_ignore_ascii_case(s.prefix.as_bytes());
        if !is_ours {
            continue;
        }
        let set_by_us = headers.iter().any(|h| {
            h.header
                .as_ref()
                .is_some_and(|h| h.key.eq_ignore_ascii_case(name))
        });
        let name = name.to_ascii_lowercase();
        if !set_by_us && !headers_to_remove.contains(&name) {
            headers_to_remove.push(name);
        }
    }
    if s.remove_authorization && request.headers.get("authorization").is_some() {
        headers_to_remove.push("authorization".to_owned());
    }

    CheckResponse {
        status: Some(Status {
            code: code::OK,
            ..Default::default()
        }),
        http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove,
            ..Default::default()
        })),
        dynamic_metadata: Some(identity_metadata(identity)),
    }
}

/// The principal for Envoy's other filters and access logs.
fn identity_metadata(identity: &Identity) -> prost_types::Struct {
    let mut fields = BTreeMap::new();
    let string = |s: &str| prost_types::Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    if let Some(subject) = &identity.subject {
        fields.insert("subject".to_owned(), string(subject));
    }
    fields.insert("issuer".to_owned(), string(&identity.issuer));
    fields.insert("provider".to_owned(), string(&identity.provider));
    fields.insert("principal_kind".to_owned(), string(identity.kind.as_str()));
    if let Some(client_id) = &identity.client_id {
        fields.insert("client_id".to_owned(), string(client_id));
    }
    fields.insert("scopes".to_owned(), string(&identity.scopes));
    if !identity.attributes.is_empty() {
        let attributes = identity
            .attributes
            .iter()
            .map(|(k, v)| {
                let list = prost_types::ListValue {
                    values: v.iter().map(|x| string(x)).collect(),
                };
                (
                    k.clone(),
                    prost_types::Value {
                        kind: Some(Kind::ListValue(list)),
                    },
                )
            })
            .collect();
        fields.insert(
            "attributes".to_owned(),
            prost_types::Value {
                kind: Some(Kind::StructValue(prost_types::Struct {
                    fields: attributes,
                })),
            },
        );
    }
    fields.insert(
        "claims".to_owned(),
        prost_types::Value {
            kind: Some(Kind::StructValue(json_struct(&identity.claims))),
        },
    );
    prost_types::Struct { fields }
}

fn json_struct(map: &serde_json::Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_value(v)))
            .collect(),
    }
}

fn json_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(json_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn json_body(error: &str, description: &str, message: Option<&str>) -> String {
    let mut body = serde_json::json!({ "error": error, "error_description": description });
    if let Some(message) = message {
        body["message"] = Value::from(message);
    }
    body.to_string()
}

fn deny(denial: &Denial, s: &AnswerSettings) -> CheckResponse {
    let reason = denial.reason;
    let (http, grpc) = match reason.status() {
        DenyStatus::BadRequest => (StatusCode::BadRequest, code::INVALID_ARGUMENT),
        DenyStatus::Unauthorized => (StatusCode::Unauthorized, code::UNAUTHENTICATED),
    };
    let message = denial.message.as_deref();
    // RFC 6750 §3: no `error` when the request carried no credential at all; then one challenge per
    // scheme a provider could have taken.
    let (challenge, body) = if reason == DenyReason::MissingCredential {
        (
            s.plain_challenge.to_string(),
            json_body("unauthorized", reason.description(), message),
        )
    } else {
        (
            format!(
                "{} realm=\"{}\", error=\"{}\", error_description=\"{}\"",
                s.scheme,
                s.realm,
                reason.error_code(),
                reason.description()
            ),
            json_body(reason.error_code(), reason.description(), message),
        )
    };
    CheckResponse {
        status: Some(Status {
            code: grpc,
            message: reason.as_str().to_owned(),
            ..Default::default()
        }),
        http_response: Some(check_response::HttpResponse::DeniedResponse(
            DeniedHttpResponse {
                status: Some(HttpStatus { code: http as i32 }),
                headers: vec![
                    header("www-authenticate", challenge),
                    header("content-type", "application/json"),
                    header("cache-control", "no-store"),
                ],
                body,
            },
        )),
        dynamic_metadata: None,
    }
}

/// Cannot decide: an error answer (Envoy 1.37+ applies failure_mode_allow / status_on_error) with a
/// non-OK status (older Envoys deny on that alone). Never an allow.
fn error(why: Unavailable) -> CheckResponse {
    CheckResponse {
        status: Some(Status {
            code: code::UNAVAILABLE,
            message: why.as_str().to_owned(),
            ..Default::default()
        }),
        http_response: Some(check_response::HttpResponse::ErrorResponse(
            DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: StatusCode::ServiceUnavailable as i32,
                }),
                headers: vec![header("content-type", "application/json")],
                body: json_body("temporarily_unavailable", why.description(), None),
            },
        )),
        dynamic_metadata: None,
    }
}
