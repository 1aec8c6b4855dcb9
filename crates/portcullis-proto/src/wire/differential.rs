//! The parser in `portcullis-proto/src/wire.rs` against prost, on the same bytes (its unit tests and the
//! `wire_request` fuzz target): [`run`] panics when they disagree.
//!
//! Three decoders read the input: prost's decode of the whole `CheckRequest`, turned into a view by
//! `portcullis-proto/src/translate.rs` (the server's path before the parser); [`read::CheckRequest`], prost decoding
//! only the fields the server reads (everything else unknown to it, so skipped as the parser skips it);
//! and the parser. The parser must accept exactly what the second accepts and give the same view, and
//! wherever the whole decode succeeds, the same view as it too. So the parser may accept more than
//! prost only where the difference lies in a field no check reads.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use serde_json::Value;

use crate as pb;
use crate::translate;
use portcullis_core::request::{Headers, RequestView};

/// How the decoders answered one input (they agreed, or [`run`] panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    /// prost decoded the message, and the parser gave the same view.
    Equal,
    /// prost rejected the message only for a field no check reads: prost reading the read fields and
    /// the parser accepted it, with the same view.
    UnreadFieldRejected,
    /// Everyone rejected it.
    Rejected,
}

/// Decodes `bytes` three ways and panics, saying how, unless they agree (see the module doc).
pub fn run(bytes: &[u8]) -> Agreement {
    let whole = pb::auth::CheckRequest::decode(bytes);
    let read = read::CheckRequest::decode(bytes);
    let parsed = super::parse(bytes);
    if let (Ok(_), Err(error)) = (&whole, &read) {
        panic!("the read-fields schema rejects what prost's whole decode accepts: {error}");
    }
    let (parsed, read) = match (parsed, read) {
        (Err(_), Err(_)) => return Agreement::Rejected,
        (Ok(parsed), Ok(read)) => (parsed, read.into_whole()),
        (Ok(parsed), Err(error)) => {
            panic!("the parser accepted what prost rejects in a read field ({error}): {parsed:?}")
        }
        (Err(error), Ok(read)) => {
            panic!("the parser rejected ({error}) what prost reads: {read:?}")
        }
    };
    let view = parsed.view();
    let raw = translate::raw_headers(&read);
    let metadata = translate::metadata(&read);
    let expected = translate::request_view(&read, raw.as_deref(), metadata.as_ref());
    let mut probes = probes_of(&view);
    probes.extend(probes_of(&expected));
    let got = Snapshot::of(&view, parsed.source_address(), &probes);
    assert_eq!(
        got,
        Snapshot::of(&expected, translate::source_address(&read), &probes),
        "the parser's view differs from prost's reading the same fields"
    );
    let Ok(whole) = whole else {
        return Agreement::UnreadFieldRejected;
    };
    let raw = translate::raw_headers(&whole);
    let metadata = translate::metadata(&whole);
    let expected = translate::request_view(&whole, raw.as_deref(), metadata.as_ref());
    probes.extend(probes_of(&expected));
    assert_eq!(
        Snapshot::of(&view, parsed.source_address(), &probes),
        Snapshot::of(&expected, translate::source_address(&whole), &probes),
        "the parser's view differs from prost's whole decode"
    );
    Agreement::Equal
}

/// The header names to look up in both views: every name either knows, as sent, lower- and upper-case,
/// and a few every check asks for.
fn probes_of(view: &RequestView<'_>) -> BTreeSet<String> {
    let mut probes: BTreeSet<String> = ["authorization", "x-request-id", "traceparent", ""]
        .into_iter()
        .map(str::to_owned)
        .collect();
    for name in view.headers.names() {
        probes.insert(name.to_owned());
        probes.insert(name.to_ascii_lowercase());
        probes.insert(name.to_ascii_uppercase());
    }
    probes
}

/// Everything a check can read from a view, owned, to compare.
#[derive(Debug, PartialEq)]
struct Snapshot {
    method: String,
    scheme: String,
    path: String,
    query: String,
    host: String,
    request_id: String,
    /// `header_map` (one entry per line, case-insensitive) rather than a map.
    list: bool,
    len: usize,
    names: BTreeSet<String>,
    /// `get` and `count` of each probe.
    lookups: BTreeMap<String, (Option<String>, usize)>,
    context_extensions: Option<BTreeMap<String, String>>,
    peer_principal: String,
    peer_certificate: String,
    metadata: Option<Value>,
    source: Option<(String, u32)>,
}

// === impl Snapshot ===

impl Snapshot {
    fn of(
        view: &RequestView<'_>,
        source: Option<(&str, u32)>,
        probes: &BTreeSet<String>,
    ) -> Snapshot {
        let headers = view.headers;
        Snapshot {
            method: view.method.to_owned(),
            scheme: view.scheme.to_owned(),
            path: view.path.to_owned(),
            query: view.query.to_owned(),
            host: view.host.to_owned(),
            request_id: view.request_id.to_owned(),
            list: matches!(headers, Headers::List(_)),
            len: headers.len(),
            names: headers.names().map(str::to_owned).collect(),
            lookups: probes
                .iter()
                .map(|name| {
                    let value = headers.get(name).map(str::to_owned);
                    (name.clone(), (value, headers.count(name)))
                })
                .collect(),
            context_extensions: view.context_extensions.map(|extensions| {
                extensions
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
            peer_principal: view.peer_principal.to_owned(),
            peer_certificate: view.peer_certificate.to_owned(),
            metadata: view.metadata.cloned().map(Value::Object),
            source: source.map(|(address, port)| (address.to_owned(), port)),
        }
    }
}

/// `CheckRequest` as prost reads it knowing only the fields the server reads (same tags, same
/// nesting, so the same recursion budget): whatever else the message holds is an unknown field to it.
/// `pipe` and `envoy_internal_address`, read for their presence only, are opaque bytes here.
pub mod read {
    use std::collections::HashMap;

    use crate as pb;
    use crate::auth::attribute_context;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckRequest {
        #[prost(message, optional, tag = "1")]
        pub attributes: Option<AttributeContext>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeContext {
        #[prost(message, optional, tag = "1")]
        pub source: Option<Peer>,
        #[prost(message, optional, tag = "4")]
        pub request: Option<Request>,
        #[prost(map = "string, string", tag = "10")]
        pub context_extensions: HashMap<String, String>,
        #[prost(message, optional, tag = "11")]
        pub metadata_context: Option<pb::core::Metadata>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Peer {
        #[prost(message, optional, tag = "1")]
        pub address: Option<Address>,
        #[prost(string, tag = "4")]
        pub principal: String,
        #[prost(string, tag = "5")]
        pub certificate: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Address {
        #[prost(oneof = "AddressKind", tags = "1, 2, 3")]
        pub address: Option<AddressKind>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum AddressKind {
        #[prost(message, tag = "1")]
        Socket(SocketAddress),
        #[prost(bytes, tag = "2")]
        Pipe(Vec<u8>),
        #[prost(bytes, tag = "3")]
        Internal(Vec<u8>),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SocketAddress {
        #[prost(string, tag = "2")]
        pub address: String,
        #[prost(oneof = "Port", tags = "3, 4")]
        pub port: Option<Port>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Port {
        #[prost(uint32, tag = "3")]
        Value(u32),
        #[prost(string, tag = "4")]
        Named(String),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(message, optional, tag = "2")]
        pub http: Option<HttpRequest>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HttpRequest {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, tag = "2")]
        pub method: String,
        #[prost(map = "string, string", tag = "3")]
        pub headers: HashMap<String, String>,
        #[prost(string, tag = "4")]
        pub path: String,
        #[prost(string, tag = "5")]
        pub host: String,
        #[prost(string, tag = "6")]
        pub scheme: String,
        #[prost(message, optional, tag = "13")]
        pub header_map: Option<HeaderMap>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HeaderMap {
        #[prost(message, repeated, tag = "1")]
        pub headers: Vec<HeaderValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HeaderValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub value: String,
        #[prost(bytes = "vec", tag = "3")]
        pub raw_value: Vec<u8>,
    }

    // === impl CheckRequest ===

    impl CheckRequest {
        /// The same fields in the generated message, for `portcullis-proto/src/translate.rs` to read.
        pub fn into_whole(self) -> pb::auth::CheckRequest {
            use pb::core::{address, socket_address};
            let Some(attributes) = self.attributes else {
                return pb::auth::CheckRequest::default();
            };
            let source = attributes.source.map(|peer| attribute_context::Peer {
                address: peer.address.map(|a| pb::core::Address {
                    address: a.address.map(|kind| match kind {
                        AddressKind::Socket(socket) => {
                            address::Address::SocketAddress(pb::core::SocketAddress {
                                address: socket.address,
                                port_specifier: socket.port.map(|port| match port {
                                    Port::Value(v) => socket_address::PortSpecifier::PortValue(v),
                                    Port::Named(n) => socket_address::PortSpecifier::NamedPort(n),
                                }),
                                ..Default::default()
                            })
                        }
                        AddressKind::Pipe(_) => address::Address::Pipe(Default::default()),
                        AddressKind::Internal(_) => {
                            address::Address::EnvoyInternalAddress(Default::default())
                        }
                    }),
                }),
                principal: peer.principal,
                certificate: peer.certificate,
                ..Default::default()
            });
            let http = attributes.request.and_then(|r| r.http).map(|http| {
                attribute_context::HttpRequest {
                    id: http.id,
                    method: http.method,
                    headers: http.headers,
                    path: http.path,
                    host: http.host,
                    scheme: http.scheme,
                    header_map: http.header_map.map(|map| pb::core::HeaderMap {
                        headers: map
                            .headers
                            .into_iter()
                            .map(|h| pb::core::HeaderValue {
                                key: h.key,
                                value: h.value,
                                raw_value: h.raw_value,
                            })
                            .collect(),
                    }),
                    ..Default::default()
                }
            });
            pb::auth::CheckRequest {
                attributes: Some(pb::auth::AttributeContext {
                    source,
                    request: Some(attribute_context::Request {
                        http,
                        ..Default::default()
                    }),
                    context_extensions: attributes.context_extensions,
                    metadata_context: attributes.metadata_context,
                    ..Default::default()
                }),
            }
        }
    }
}
