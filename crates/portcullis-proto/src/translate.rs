//! Where Envoy's protobuf meets our types: an [`Answer`] becomes a `CheckResponse` (with each answer's
//! gRPC code), and Envoy's filter metadata becomes JSON. It decides nothing.
//!
//! The server reads a `CheckRequest` with `portcullis-proto/src/wire.rs`, straight from its bytes. The prost path here
//! (a decoded `CheckRequest` to a [`RequestView`]) is what that parser must equal: the differential tests
//! and the `wire_request` fuzz target compare the two, so it is built for them only.

// Hand-written: linted, unlike the generated code beside it.
#![warn(clippy::all)]

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

#[cfg(any(test, feature = "fuzzing"))]
use crate::auth::attribute_context;
use crate::auth::{
    check_response, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use crate::core::{header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption};
use crate::http_type::HttpStatus;
use crate::rpc::Status;
use crate::{json, Struct};
use portcullis_core::answer::{Answer, Metadata, Outcome};
use portcullis_core::identity::Identity;
#[cfg(any(test, feature = "fuzzing"))]
use portcullis_core::request::{Headers, RequestView};

/// gRPC codes (google.rpc.Code) carried in `CheckResponse.status`.
mod code {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Envoy's raw header list, when `encode_raw_headers` is on, as owned pairs for [`Headers::List`].
#[cfg(any(test, feature = "fuzzing"))]
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
            .map(|(namespace, s)| (namespace.clone(), Value::Object(json::from_struct(s))))
            .collect(),
    )
}

/// Borrows our view of a check request. `raw` is what [`raw_headers`] returned for it, `metadata` what
/// [`metadata`] did.
#[cfg(any(test, feature = "fuzzing"))]
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
    view.scheme = field(|h| h.scheme.as_str());
    if let Some(source) = request.attributes.as_ref().and_then(|a| a.source.as_ref()) {
        view.peer_principal = &source.principal;
        view.peer_certificate = &source.certificate;
    }
    view.metadata = metadata;
    view
}

/// The downstream client's address and port as Envoy saw it (`attributes.source.address`), if a socket
/// address.
#[cfg(any(test, feature = "fuzzing"))]
pub fn source_address(request: &CheckRequest) -> Option<(&str, u32)> {
    use crate::envoy::config::core::v3::{address, socket_address};
    let address = request
        .attributes
        .as_ref()?
        .source
        .as_ref()?
        .address
        .as_ref()?;
    match address.address.as_ref()? {
        address::Address::SocketAddress(socket) => {
            let port = match socket.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(port)) => port,
                _ => 0,
            };
            Some((socket.address.as_str(), port))
        }
        _ => None,
    }
}

/// Writes the answer as the response Envoy acts on.
pub fn check_response(answer: Answer<'_>) -> CheckResponse {
    // The identity's parts, encoded once per cached identity: its headers and its metadata.
    let prepared = answer
        .metadata
        .as_ref()
        .and_then(|m| m.identity)
        .map(prepared);
    let (skip, encoded_headers) = match (answer.outcome, answer.identity_headers, &prepared) {
        (Outcome::Allow, Some(own), Some(prepared)) if own.count > 0 => {
            let own_headers = &answer.headers[..own.count.min(answer.headers.len())];
            (
                own_headers.len(),
                Some(prepared.headers(own.settings, own_headers)),
            )
        }
        _ => (0, None),
    };
    let headers = answer.headers[skip..]
        .iter()
        .map(|(key, value)| header(key, value))
        .collect();
    let body = answer.body;
    let status = |code, message: &str| {
        Some(Status {
            code,
            message: message.to_owned(),
            ..Default::default()
        })
    };
    let denied = |headers| DeniedHttpResponse {
        status: Some(HttpStatus {
            code: i32::from(answer.status),
        }),
        headers,
        body,
    };
    let mut response = match answer.outcome {
        Outcome::Allow => CheckResponse {
            status: status(code::OK, ""),
            http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                headers,
                encoded_headers,
                headers_to_remove: answer.remove,
                query_parameters_to_remove: answer.remove_query,
                ..Default::default()
            })),
            dynamic_metadata: answer
                .metadata
                .as_ref()
                .map(|m| metadata_struct(m, prepared.as_deref())),
        },
        Outcome::Deny { standard_status } => CheckResponse {
            status: status(grpc_code(standard_status), answer.reason),
            http_response: Some(check_response::HttpResponse::DeniedResponse(denied(
                headers,
            ))),
            dynamic_metadata: None,
        },
        // Envoy 1.37+ applies failure_mode_allow / status_on_error to an error answer; older Envoys deny
        // on the non-OK status alone.
        Outcome::Unavailable => CheckResponse {
            status: status(code::UNAVAILABLE, answer.reason),
            http_response: Some(check_response::HttpResponse::ErrorResponse(denied(headers))),
            dynamic_metadata: None,
        },
    };
    if let Some(explanation) = answer.explanation {
        if let Ok(Value::Object(map)) = serde_json::to_value(explanation) {
            let metadata = response
                .dynamic_metadata
                .get_or_insert_with(Default::default);
            metadata.fields.insert(
                "explanation".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StructValue(json::to_struct(&map))),
                },
            );
        }
    }
    response
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        // Explicit: an unset append_action (0) means append, and the deprecated `append` is left unset.
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn grpc_code(status: u16) -> i32 {
    match status {
        400 => code::INVALID_ARGUMENT,
        401 => code::UNAUTHENTICATED,
        _ => code::PERMISSION_DENIED,
    }
}

/// The allow's dynamic metadata: the principal for Envoy's other filters and access logs. The identity's
/// part is encoded once per identity (kept in [`Identity::prepared`] while the identity is cached) and
/// written as bytes beside this request's own fields (decision id, route, `would_deny`).
fn metadata_struct(metadata: &Metadata<'_>, prepared: Option<&PreparedIdentity>) -> Struct {
    let mut fields = BTreeMap::new();
    fields.insert("decision_id".to_owned(), json::string(metadata.decision_id));
    fields.insert("route".to_owned(), json::string(metadata.route));
    if let Some(label) = metadata.would_deny {
        fields.insert("would_deny".to_owned(), json::string(label));
    }
    let encoded = prepared
        .zip(metadata.identity)
        .map(|(prepared, identity)| prepared.metadata(identity, metadata.claims));
    Struct { fields, encoded }
}

/// What the answers of one identity share, made on its first answer and kept with it while it is cached
/// ([`Identity::prepared`]): its metadata entries and its headers, encoded.
#[derive(Clone)]
struct PreparedIdentity {
    /// The identity's metadata fields without its claims, encoded (see [`Struct::encoded`]).
    metadata: Arc<[u8]>,
    /// The same with its claims (`claims_in_metadata`), made on the first answer that asks for them.
    with_claims: std::sync::OnceLock<Arc<[u8]>>,
    /// Its headers as `OkHttpResponse.headers` entries, for the answer settings they were named under
    /// (the first settings that asked; under others they are encoded per answer).
    headers: std::sync::OnceLock<(u64, Arc<[u8]>)>,
}

// === impl PreparedIdentity ===

impl PreparedIdentity {
    fn new(identity: &Identity) -> PreparedIdentity {
        PreparedIdentity {
            metadata: identity_entries(identity, false).into(),
            with_claims: std::sync::OnceLock::new(),
            headers: std::sync::OnceLock::new(),
        }
    }

    /// The identity's metadata fields, encoded, with its claims or without.
    fn metadata(&self, identity: &Identity, claims: bool) -> Arc<[u8]> {
        if !claims {
            return Arc::clone(&self.metadata);
        }
        Arc::clone(self.with_claims.get_or_init(|| {
            // Each entry is a field of its own: the claims appended to the rest decode as one map.
            let mut buf = self.metadata.to_vec();
            json::EntryWriter::new(&mut buf).entry("claims", json::Entry::Object(&identity.claims));
            buf.into()
        }))
    }

    /// `own`, the identity's headers under answer settings `settings`, encoded.
    fn headers(&self, settings: u64, own: &[portcullis_core::answer::Header<'_>]) -> Arc<[u8]> {
        let encode = || -> Arc<[u8]> {
            let options: Vec<HeaderValueOption> =
                own.iter().map(|(key, value)| header(key, value)).collect();
            let mut buf =
                Vec::with_capacity(prost::encoding::message::encoded_len_repeated(2, &options));
            prost::encoding::message::encode_repeated(2, &options, &mut buf);
            buf.into()
        };
        let (made_under, encoded) = self.headers.get_or_init(|| (settings, encode()));
        if *made_under == settings {
            Arc::clone(encoded)
        } else {
            encode()
        }
    }
}

/// The identity's prepared parts (made now if this is its first answer).
fn prepared(identity: &Identity) -> std::borrow::Cow<'_, PreparedIdentity> {
    match identity
        .prepared
        .get_or_init(|| PreparedIdentity::new(identity))
    {
        Some(prepared) => std::borrow::Cow::Borrowed(prepared),
        None => std::borrow::Cow::Owned(PreparedIdentity::new(identity)),
    }
}

/// An identity's metadata fields as encoded `Struct` entries, written straight from the identity, with
/// its claims or without.
fn identity_entries(identity: &Identity, claims: bool) -> Vec<u8> {
    use json::Entry;
    let mut buf = Vec::with_capacity(512);
    let mut out = json::EntryWriter::new(&mut buf);
    if let Some(subject) = &identity.subject {
        out.entry("subject", Entry::Str(subject));
    }
    out.entry("issuer", Entry::Str(&identity.issuer))
        .entry("provider", Entry::Str(&identity.provider))
        .entry("principal_kind", Entry::Str(identity.kind.as_str()));
    if let Some(client_id) = &identity.client_id {
        out.entry("client_id", Entry::Str(client_id));
    }
    out.entry("scopes", Entry::Str(&identity.scopes));
    if let Some(actor) = identity.actors.first() {
        out.entry("actor", Entry::Str(actor))
            .entry("delegation_chain", Entry::Strings(&identity.actors));
    }
    if !identity.attributes.is_empty() {
        out.entry("attributes", Entry::StringLists(&identity.attributes));
    }
    if claims {
        out.entry("claims", Entry::Object(&identity.claims));
    }
    buf
}

/// The same fields as a `prost_types` map: what [`identity_entries`] must decode to.
#[cfg(test)]
fn identity_fields(identity: &Identity, claims: bool) -> BTreeMap<String, prost_types::Value> {
    use prost_types::value::Kind;
    let mut fields = BTreeMap::new();
    let string = json::string;
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
    if !identity.actors.is_empty() {
        fields.insert("actor".to_owned(), string(&identity.actors[0]));
        let chain = prost_types::ListValue {
            values: identity.actors.iter().map(|a| string(a)).collect(),
        };
        fields.insert(
            "delegation_chain".to_owned(),
            prost_types::Value {
                kind: Some(Kind::ListValue(chain)),
            },
        );
    }
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
    if claims {
        fields.insert(
            "claims".to_owned(),
            prost_types::Value {
                kind: Some(Kind::StructValue(json::to_struct(&identity.claims))),
            },
        );
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn an_identitys_headers_are_encoded_once_and_decode_as_the_list() {
        use portcullis_core::answer::IdentityHeaders;
        let mut identity =
            portcullis_core::identity::IdentityBuilder::anonymous(&Arc::from("p"), "anon");
        identity.subject = Some("alice".into());
        let identity = Arc::new(identity);
        let answer = |settings: u64, decision: &'static str| Answer {
            outcome: Outcome::Allow,
            status: 200,
            headers: vec![
                ("x-auth-subject".into(), "alice".into()),
                ("x-auth-provider".into(), "p".into()),
                ("x-auth-roles".into(), "a,b".into()),
                ("x-auth-decision-id".into(), decision.into()),
            ],
            identity_headers: Some(IdentityHeaders { settings, count: 3 }),
            remove: vec!["x-auth-email".into()],
            remove_query: Vec::new(),
            body: String::new(),
            reason: "",
            metadata: Some(Metadata {
                identity: Some(&identity),
                decision_id: decision,
                route: "default",
                would_deny: None,
                claims: false,
            }),
            explanation: None,
        };
        let headers = |response: &CheckResponse| -> Vec<(String, String, i32)> {
            let decoded = CheckResponse::decode(&*response.encode_to_vec()).unwrap();
            let Some(check_response::HttpResponse::OkResponse(ok)) = decoded.http_response else {
                panic!("an allow")
            };
            assert_eq!(ok.headers_to_remove, ["x-auth-email"]);
            ok.headers
                .iter()
                .map(|h| {
                    let hv = h.header.as_ref().unwrap();
                    (hv.key.clone(), hv.value.clone(), h.append_action)
                })
                .collect()
        };
        let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
        let expected = |decision: &str| {
            vec![
                ("x-auth-subject".to_owned(), "alice".to_owned(), overwrite),
                ("x-auth-provider".to_owned(), "p".to_owned(), overwrite),
                ("x-auth-roles".to_owned(), "a,b".to_owned(), overwrite),
                (
                    "x-auth-decision-id".to_owned(),
                    decision.to_owned(),
                    overwrite,
                ),
            ]
        };
        let first = check_response(answer(7, "d1"));
        let second = check_response(answer(7, "d2"));
        assert_eq!(headers(&first), expected("d1"));
        assert_eq!(headers(&second), expected("d2"));
        let encoded = |r: &CheckResponse| match &r.http_response {
            Some(check_response::HttpResponse::OkResponse(ok)) => {
                ok.encoded_headers.clone().unwrap()
            }
            _ => panic!("an allow"),
        };
        // The second answer reuses the first one's encoding; other settings get their own.
        assert!(Arc::ptr_eq(&encoded(&first), &encoded(&second)));
        let other = check_response(answer(8, "d3"));
        assert!(!Arc::ptr_eq(&encoded(&first), &encoded(&other)));
        assert_eq!(headers(&other), expected("d3"));
    }

    #[test]
    fn an_identitys_entries_decode_as_its_fields() {
        let mut identity =
            portcullis_core::identity::IdentityBuilder::anonymous(&Arc::from("p"), "anon");
        for claims in [false, true] {
            let bare = prost_types::Struct::decode(&*identity_entries(&identity, claims)).unwrap();
            assert_eq!(bare.fields, identity_fields(&identity, claims));
        }

        identity.subject = Some("auth0|alice".into());
        identity.client_id = Some("client-7".into());
        identity.scopes = "read write".into();
        identity.actors = vec!["agent".into(), "".into(), "orchestrator".into()];
        identity
            .attributes
            .insert("roles".into(), vec!["trader".into(), "admin".into()]);
        identity.attributes.insert("empty".into(), vec![]);
        identity.claims = serde_json::json!({
            "sub": "auth0|alice", "exp": 1764681234, "permissions": ["a", "b"],
            "act": {"sub": "agent", "act": {"sub": "orchestrator"}}, "ratio": 0.25, "n": null,
        })
        .as_object()
        .unwrap()
        .clone();
        let full = prost_types::Struct::decode(&*identity_entries(&identity, true)).unwrap();
        assert_eq!(full.fields, identity_fields(&identity, true));
        assert!(full.fields.contains_key("delegation_chain"));
        assert!(full.fields.contains_key("attributes"));
        assert!(full.fields.contains_key("claims"));
        let without = prost_types::Struct::decode(&*identity_entries(&identity, false)).unwrap();
        assert_eq!(without.fields, identity_fields(&identity, false));
        assert!(!without.fields.contains_key("claims"));
        assert!(without.fields.contains_key("subject"));

        // What a prepared identity writes: the claims appended on request, made once.
        let prepared = PreparedIdentity::new(&identity);
        let with_claims = prepared.metadata(&identity, true);
        assert_eq!(
            prost_types::Struct::decode(&*with_claims).unwrap().fields,
            identity_fields(&identity, true)
        );
        assert!(Arc::ptr_eq(
            &with_claims,
            &prepared.metadata(&identity, true)
        ));
        assert_eq!(
            prost_types::Struct::decode(&*prepared.metadata(&identity, false))
                .unwrap()
                .fields,
            identity_fields(&identity, false)
        );
    }
}
