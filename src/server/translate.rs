//! The one place where Envoy's protobuf meets our types: a `CheckRequest` becomes a [`RequestView`], and a
//! [`Decision`] becomes a `CheckResponse`. It also owns the mapping of outcomes to HTTP and gRPC statuses.

use std::collections::BTreeMap;

use prost_types::value::Kind;
use serde_json::Value;

use std::fmt::Write as _;

use crate::authorizer::Authorizer;
use crate::config::Config;
use crate::decision::{Decision, Denial, DenyCause, Identity, Unavailable, Verdict};
use crate::pb::auth::{
    attribute_context, check_response, CheckRequest, CheckResponse, DeniedHttpResponse,
    OkHttpResponse,
};
use crate::pb::core::{header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption};
use crate::pb::http_type::{HttpStatus, StatusCode};
use crate::pb::rpc::Status;
use crate::policy::{DenyVars, Policy, Route};
use crate::request::{Headers, RequestView};

/// gRPC codes (google.rpc.Code) carried in `CheckResponse.status`.
mod code {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Everything about answers that is fixed at start: header names, challenges per route.
#[derive(Debug, Clone)]
pub struct AnswerSettings {
    prefix: Box<str>,
    subject: Box<str>,
    client_id: Box<str>,
    issuer: Box<str>,
    scopes: Box<str>,
    provider: Box<str>,
    decision_id: Box<str>,
    would_deny: Box<str>,
    remove_authorization: bool,
    realm: Box<str>,
    /// For each route: the scheme of its error challenges (the first its providers read, usually `Bearer`),
    /// and its challenge when no credential was sent: one per scheme its providers read.
    routes: Vec<(Box<str>, Box<str>)>,
}

impl AnswerSettings {
    pub fn new(config: &Config, authorizer: &Authorizer) -> AnswerSettings {
        let prefix = config.headers.prefix.as_str();
        let routes = (0..authorizer.policy().routes().count())
            .map(|route| {
                let schemes = authorizer
                    .providers()
                    .challenge_schemes(authorizer.route_providers(route));
                let plain = schemes
                    .iter()
                    .map(|scheme| format!("{scheme} realm=\"{}\"", config.realm))
                    .collect::<Vec<_>>()
                    .join(", ");
                (schemes[0].as_str().into(), plain.into())
            })
            .collect();
        AnswerSettings {
            prefix: prefix.into(),
            subject: format!("{prefix}subject").into(),
            client_id: format!("{prefix}client-id").into(),
            issuer: format!("{prefix}issuer").into(),
            scopes: format!("{prefix}scopes").into(),
            provider: format!("{prefix}provider").into(),
            decision_id: format!("{prefix}decision-id").into(),
            would_deny: format!("{prefix}would-deny").into(),
            remove_authorization: config.headers.remove_authorization,
            realm: config.realm.as_str().into(),
            routes,
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
        // Envoy's `x-request-id` (the id in its access log), else its stream id.
        match headers.get("x-request-id") {
            Some(id) => id,
            None => field(|h| h.id.as_str()),
        },
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
    verdict: &Verdict,
    request: &RequestView<'_>,
    settings: &AnswerSettings,
    policy: &Policy,
) -> CheckResponse {
    let mut response = match &verdict.decision {
        Decision::Allow(identity) => allow(Some(identity), None, verdict, request, settings),
        Decision::Permit {
            identity,
            would_deny,
        } => allow(
            identity.as_deref(),
            Some(would_deny),
            verdict,
            request,
            settings,
        ),
        Decision::Deny(denial) => {
            let route = policy.routes().nth(verdict.route);
            deny(denial, verdict, settings, route)
        }
        Decision::Error(why) => error(*why, verdict),
    };
    if let Some(explanation) = &verdict.explanation {
        if let Ok(Value::Object(map)) = serde_json::to_value(explanation) {
            let metadata = response
                .dynamic_metadata
                .get_or_insert_with(Default::default);
            metadata.fields.insert(
                "explanation".to_owned(),
                prost_types::Value {
                    kind: Some(Kind::StructValue(json_struct(&map))),
                },
            );
        }
    }
    response
}

fn header(key: &str, value: impl Into<String>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.into(),
            raw_value: Vec::new(),
        }),
        // Explicit: an unset append_action (0) means append, and the deprecated `append` is left unset.
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// An allow, or a permissive-mode permit (`would_deny`), with the identity when there is one.
fn allow(
    identity: Option<&Identity>,
    would_deny: Option<&Denial>,
    verdict: &Verdict,
    request: &RequestView<'_>,
    s: &AnswerSettings,
) -> CheckResponse {
    let mut headers = Vec::with_capacity(8);
    if let Some(identity) = identity {
        identity_headers(identity, s, &mut headers);
    }
    headers.push(header(&s.decision_id, verdict.decision_id.as_str()));
    if let Some(denial) = would_deny {
        headers.push(header(&s.would_deny, denial.label()));
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

    let mut metadata = identity.map(identity_metadata).unwrap_or_default();
    let string = |s: &str| prost_types::Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    metadata
        .fields
        .insert("decision_id".to_owned(), string(&verdict.decision_id));
    metadata
        .fields
        .insert("route".to_owned(), string(&verdict.route_name));
    if let Some(denial) = would_deny {
        metadata
            .fields
            .insert("would_deny".to_owned(), string(denial.label()));
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
        dynamic_metadata: Some(metadata),
    }
}

fn identity_headers(identity: &Identity, s: &AnswerSettings, headers: &mut Vec<HeaderValueOption>) {
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
        if values.is_empty()
            || !crate::config::is_header_name(name)
            || crate::config::BUILTIN_HEADER_SUFFIXES.contains(&name.as_str())
        {
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

fn json_body(
    denial_error: &str,
    description: &str,
    decision_id: &str,
    message: Option<&str>,
) -> String {
    let mut body = serde_json::json!({
        "error": denial_error,
        "error_description": description,
        "decision_id": decision_id,
    });
    if let Some(message) = message {
        body["message"] = Value::from(message);
    }
    body.to_string()
}

fn grpc_code(status: u16) -> i32 {
    match status {
        400 => code::INVALID_ARGUMENT,
        401 => code::UNAUTHENTICATED,
        _ => code::PERMISSION_DENIED,
    }
}

/// The `WWW-Authenticate` challenge: plain when no credential was sent (RFC 6750 §3), else with `error`,
/// `error_description` and the policy's parameters (`scope`, RFC 6750 §3.1; `acr_values`, `max_age`,
/// RFC 9470 §3).
fn challenge(denial: &Denial, s: &AnswerSettings, route: usize) -> String {
    let (scheme, plain) = &s.routes[route.min(s.routes.len() - 1)];
    if denial.is_plain_challenge() {
        return plain.to_string();
    }
    let mut out = format!(
        "{scheme} realm=\"{}\", error=\"{}\", error_description=\"{}\"",
        s.realm,
        denial.error_code(),
        denial.description()
    );
    if let DenyCause::Policy(unmet) = &denial.cause {
        for (name, value) in unmet.challenge_params() {
            let _ = write!(out, ", {name}=\"{value}\"");
        }
    }
    out
}

fn deny(
    denial: &Denial,
    verdict: &Verdict,
    s: &AnswerSettings,
    route: Option<&Route>,
) -> CheckResponse {
    let custom = route.map(Route::deny);
    let status = custom.and_then(|d| d.status()).unwrap_or(denial.status());
    let message = denial.message.as_deref();
    let mut headers = vec![
        header("www-authenticate", challenge(denial, s, verdict.route)),
        header("content-type", "application/json"),
        header("cache-control", "no-store"),
    ];
    let body = match custom.and_then(|d| d.body()) {
        Some(template) => template.render(&DenyVars {
            error: denial.error_code(),
            error_description: denial.description(),
            decision_id: &verdict.decision_id,
            route: &verdict.route_name,
        }),
        None => json_body(
            denial.error_code(),
            denial.description(),
            &verdict.decision_id,
            message,
        ),
    };
    if let Some(custom) = custom {
        for (name, value) in custom.headers() {
            headers.retain(|h| {
                h.header
                    .as_ref()
                    .is_none_or(|h| !h.key.eq_ignore_ascii_case(name))
            });
            headers.push(header(name, value));
        }
    }
    CheckResponse {
        status: Some(Status {
            code: grpc_code(denial.status()),
            message: denial.label().to_owned(),
            ..Default::default()
        }),
        http_response: Some(check_response::HttpResponse::DeniedResponse(
            DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: i32::from(status),
                }),
                headers,
                body,
            },
        )),
        dynamic_metadata: None,
    }
}

/// Cannot decide: an error answer (Envoy 1.37+ applies failure_mode_allow / status_on_error) with a
/// non-OK status (older Envoys deny on that alone). Never an allow.
fn error(why: Unavailable, verdict: &Verdict) -> CheckResponse {
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
                body: json_body(
                    "temporarily_unavailable",
                    why.description(),
                    &verdict.decision_id,
                    None,
                ),
            },
        )),
        dynamic_metadata: None,
    }
}
