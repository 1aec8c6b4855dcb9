//! The parser against prost (`differential::run`) on structured requests, hand-made bytes and every
//! truncation and single-byte mutation of them; and a few of its answers spelled out.

use std::collections::HashMap;

use prost::Message as _;

use super::differential::{run, Agreement};
use super::{parse, WireError};
use crate as pb;
use crate::auth::{attribute_context, AttributeContext, CheckRequest};
use crate::core::{address, socket_address};

// --- raw encoding ---

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Wire types.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const START: u8 = 3;
const END: u8 = 4;
const I32: u8 = 5;

fn key(tag: u32, wire: u8) -> Vec<u8> {
    varint(u64::from(tag) << 3 | u64::from(wire))
}

fn field(tag: u32, body: &[u8]) -> Vec<u8> {
    [key(tag, LEN), varint(body.len() as u64), body.to_vec()].concat()
}

fn text(tag: u32, s: &str) -> Vec<u8> {
    field(tag, s.as_bytes())
}

fn number(tag: u32, value: u64) -> Vec<u8> {
    [key(tag, VARINT), varint(value)].concat()
}

fn entry(k: &[u8], v: &[u8]) -> Vec<u8> {
    [field(1, k), field(2, v)].concat()
}

/// A `CheckRequest` whose `attributes` hold `fields`.
fn attributes(fields: &[u8]) -> Vec<u8> {
    field(1, fields)
}

/// A `CheckRequest` whose `attributes.request.http` holds `fields`.
fn http(fields: &[u8]) -> Vec<u8> {
    attributes(&field(4, &field(2, fields)))
}

/// A `CheckRequest` whose `attributes.source` holds `fields`.
fn source(fields: &[u8]) -> Vec<u8> {
    attributes(&field(1, fields))
}

/// A `CheckRequest` whose `attributes.source.address` holds `fields`.
fn address(fields: &[u8]) -> Vec<u8> {
    source(&field(1, fields))
}

/// One `HeaderValue` of `header_map` (field 13).
fn raw_header(fields: &[u8]) -> Vec<u8> {
    field(13, &field(1, fields))
}

// --- structured requests ---

fn structured(
    headers: &[(&str, &str)],
    edit: impl FnOnce(&mut AttributeContext, &mut attribute_context::HttpRequest),
) -> Vec<u8> {
    let mut http = attribute_context::HttpRequest {
        id: "17".into(),
        method: "GET".into(),
        path: "/items?page=2&q=a%20b".into(),
        host: "api.example.com".into(),
        scheme: "https".into(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    };
    let mut attributes = AttributeContext::default();
    edit(&mut attributes, &mut http);
    attributes.request = Some(attribute_context::Request {
        http: Some(http),
        ..Default::default()
    });
    CheckRequest {
        attributes: Some(attributes),
    }
    .encode_to_vec()
}

fn socket(address: &str, port: Option<socket_address::PortSpecifier>) -> pb::core::Address {
    pb::core::Address {
        address: Some(address::Address::SocketAddress(pb::core::SocketAddress {
            address: address.into(),
            port_specifier: port,
            ..Default::default()
        })),
    }
}

fn peer(address: pb::core::Address) -> attribute_context::Peer {
    attribute_context::Peer {
        address: Some(address),
        principal: "spiffe://cluster.local/ns/a/sa/b".into(),
        certificate: "-----BEGIN%20CERTIFICATE-----".into(),
        ..Default::default()
    }
}

fn metadata(json: serde_json::Value) -> pb::core::Metadata {
    let mut metadata = pb::core::Metadata::default();
    for (namespace, value) in json.as_object().unwrap() {
        let fields = pb::json::to_struct(value.as_object().unwrap()).fields;
        metadata.filter_metadata.insert(
            namespace.clone(),
            pb::Struct {
                fields,
                encoded: None,
            },
        );
    }
    metadata
}

/// Requests as Envoy and odd clients send them, each valid protobuf.
fn structured_requests() -> Vec<Vec<u8>> {
    let typical = [
        ("authorization", "Bearer abc.def.ghi"),
        ("x-request-id", "7f1c2c1e"),
        ("user-agent", "curl/8"),
        ("accept", "*/*"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ];
    let mut requests = vec![
        Vec::new(),
        CheckRequest::default().encode_to_vec(),
        CheckRequest {
            attributes: Some(AttributeContext::default()),
        }
        .encode_to_vec(),
        structured(&typical, |_, _| {}),
        structured(&[], |_, _| {}),
        // Mixed case is two names in a map; empty names and values are names and values.
        structured(
            &[
                ("Authorization", "Bearer A"),
                ("authorization", "Bearer b"),
                ("", "empty name"),
                ("x-empty", ""),
            ],
            |_, _| {},
        ),
        // No x-request-id: the stream id is the request id.
        structured(&[("accept", "*/*")], |_, _| {}),
        // Raw headers: value, else raw_value (lossy), keys lower-cased, repeats kept.
        structured(&[], |_, http| {
            http.header_map = Some(pb::core::HeaderMap {
                headers: vec![
                    header("X-Auth-Subject", "a", b""),
                    header("x-auth-subject", "", b"b"),
                    header("Authorization", "Bearer x", b"ignored"),
                    header("x-bin", "", b"\xff\xfe ok"),
                    header("", "", b""),
                ],
            });
        }),
        // Both: the map wins.
        structured(&[("authorization", "Bearer map")], |_, http| {
            http.header_map = Some(pb::core::HeaderMap {
                headers: vec![header("authorization", "Bearer raw", b"")],
            });
        }),
        // An empty header_map is no raw list.
        structured(&[], |_, http| {
            http.header_map = Some(pb::core::HeaderMap::default());
        }),
        structured(&typical, |a, _| {
            a.context_extensions = HashMap::from([
                ("service".to_owned(), "billing".to_owned()),
                (String::new(), String::new()),
            ]);
        }),
        structured(&typical, |a, _| {
            a.source = Some(peer(socket(
                "10.0.0.7",
                Some(socket_address::PortSpecifier::PortValue(51234)),
            )));
        }),
        structured(&typical, |a, _| {
            a.source = Some(peer(socket(
                "10.0.0.7",
                Some(socket_address::PortSpecifier::NamedPort("https".into())),
            )));
        }),
        structured(&typical, |a, _| {
            a.source = Some(peer(socket("::1", None)));
        }),
        structured(&typical, |a, _| {
            a.source = Some(peer(pb::core::Address {
                address: Some(address::Address::Pipe(pb::core::Pipe {
                    path: "/run/envoy.sock".into(),
                    mode: 0o600,
                })),
            }));
        }),
        structured(&typical, |a, _| {
            a.source = Some(peer(pb::core::Address {
                address: Some(address::Address::EnvoyInternalAddress(Default::default())),
            }));
        }),
        structured(&typical, |a, _| {
            a.source = Some(peer(pb::core::Address::default()));
        }),
        structured(&typical, |a, _| {
            a.metadata_context = Some(metadata(serde_json::json!({
                "envoy.filters.http.jwt_authn": {"jwt_payload": {"sub": "a", "exp": 1764681234, "scope": ["x", "y"], "n": null, "ok": true, "r": 0.5}},
                "other": {},
            })));
        }),
        // Fields the server does not read, present and valid.
        structured(&typical, |a, http| {
            a.destination = Some(peer(socket("10.0.0.1", None)));
            a.tls_session = Some(attribute_context::TlsSession {
                sni: "api.example.com".into(),
            });
            a.route_metadata_context = Some(metadata(serde_json::json!({"r": {"k": "v"}})));
            http.query = "page=2".into();
            http.fragment = "top".into();
            http.size = -1;
            http.protocol = "HTTP/2".into();
            http.body = "{}".into();
            http.raw_body = vec![0, 255];
        }),
    ];
    // Concatenated messages merge: the second `attributes` adds to the first.
    let second = structured(
        &[("authorization", "Bearer second"), ("x-new", "1")],
        |a, http| {
            http.method = "POST".into();
            http.path = String::new();
            a.context_extensions = HashMap::from([("service".to_owned(), "payments".to_owned())]);
            a.metadata_context = Some(metadata(
                serde_json::json!({"other": {"k": 1}, "third": {"k": [1, 2]}}),
            ));
            a.source = Some(attribute_context::Peer {
                address: Some(socket(
                    "",
                    Some(socket_address::PortSpecifier::PortValue(443)),
                )),
                ..Default::default()
            });
        },
    );
    let merged: Vec<Vec<u8>> = requests
        .iter()
        .filter(|r| !r.is_empty())
        .map(|first| [first.as_slice(), &second].concat())
        .collect();
    requests.extend(merged);
    requests
}

fn header(key: &str, value: &str, raw: &[u8]) -> pb::core::HeaderValue {
    pb::core::HeaderValue {
        key: key.into(),
        value: value.into(),
        raw_value: raw.to_vec(),
    }
}

/// Hand-made messages prost decodes: what an encoder never writes but a parser must read alike.
fn valid_oddities() -> Vec<Vec<u8>> {
    let unknown_of_every_type = |tag: u32| {
        [
            number(tag, 1 << 40),
            [key(tag, I64), vec![1; 8]].concat(),
            field(tag, b"\xff opaque"),
            [key(tag, I32), vec![2; 4]].concat(),
            // A group holding a field of every type and a nested group.
            key(tag, START),
            number(1, 5),
            [key(2, I64), vec![0; 8]].concat(),
            field(3, b"x"),
            [key(4, I32), vec![0; 4]].concat(),
            key(5, START),
            key(5, END),
            key(tag, END),
        ]
        .concat()
    };
    vec![
        // A header repeated in one map: the last value wins, the name keeps its place.
        http(
            &[
                field(3, &entry(b"a", b"1")),
                field(3, &entry(b"b", b"2")),
                field(3, &entry(b"a", b"3")),
            ]
            .concat(),
        ),
        // Map entries missing their key, their value, or both; a key and a value twice in one entry.
        http(
            &[
                field(3, &field(2, b"no key")),
                field(3, &field(1, b"no-value")),
                field(3, b""),
                field(3, &[entry(b"k", b"v"), entry(b"k2", b"v2")].concat()),
                field(
                    3,
                    &[field(2, b"value first"), field(1, b"then-key")].concat(),
                ),
            ]
            .concat(),
        ),
        // Singular strings seen twice: the last wins.
        http(
            &[
                text(4, "/first"),
                text(2, "GET"),
                text(4, "/second?x"),
                text(2, "PUT"),
            ]
            .concat(),
        ),
        // `http` twice in one request, `request` twice in one `attributes`.
        attributes(
            &[
                field(4, &field(2, &text(4, "/a"))),
                field(
                    4,
                    &[field(2, &text(5, "h")), field(2, &text(6, "http"))].concat(),
                ),
            ]
            .concat(),
        ),
        // Unknown fields of every wire type at every level we read, and in the entries.
        [
            unknown_of_every_type(2),
            http(
                &[
                    unknown_of_every_type(99),
                    field(3, &[entry(b"a", b"1"), unknown_of_every_type(7)].concat()),
                    raw_header(&[text(1, "K"), unknown_of_every_type(9)].concat()),
                ]
                .concat(),
            ),
            attributes(
                &[
                    unknown_of_every_type(99),
                    field(1, &unknown_of_every_type(6)),
                ]
                .concat(),
            ),
            address(
                &[
                    unknown_of_every_type(9),
                    field(1, &unknown_of_every_type(9)),
                ]
                .concat(),
            ),
            unknown_of_every_type(536_870_911),
        ]
        .concat(),
        // Oneofs: the last member wins; a socket address seen twice in a row merges.
        address(&[field(1, &text(2, "10.0.0.1")), field(2, b"")].concat()),
        address(&[field(2, b""), field(1, &text(2, "10.0.0.2"))].concat()),
        address(&[field(1, &text(2, "10.0.0.3")), field(1, &number(3, 8080))].concat()),
        address(
            &[
                field(1, &text(2, "10.0.0.4")),
                field(3, b""),
                field(1, &number(3, 1)),
            ]
            .concat(),
        ),
        address(&field(1, &[number(3, 80), text(4, "http")].concat())),
        address(&field(1, &[text(4, "http"), number(3, 80)].concat())),
        address(&field(1, &[number(3, 80), number(3, 81)].concat())),
        // port_value keeps the low 32 bits of a larger varint.
        address(&field(1, &number(3, (1 << 32) + 7))),
        address(&field(1, &number(3, u64::MAX))),
        source(&[field(1, b""), text(4, "p1"), text(4, "p2"), text(5, "c")].concat()),
        // Non-canonical varints: a padded tag and a padded length.
        http(&[vec![0x22 | 0x80, 0x00], vec![0x82, 0x00], b"/p".to_vec()].concat()),
        // A ten-byte varint (the tenth byte 1) in an unknown field.
        [key(2, VARINT), vec![0xff; 9], vec![0x01]].concat(),
        // Raw headers over several header_map occurrences, with raw_value and value twice.
        http(
            &[
                raw_header(&[text(1, "A"), text(2, "1"), text(2, "2")].concat()),
                raw_header(&[text(1, "b"), field(3, b"raw"), field(3, b"raw2")].concat()),
                field(13, b""),
            ]
            .concat(),
        ),
        // context_extensions repeated.
        attributes(
            &[
                field(10, &entry(b"k", b"1")),
                field(10, &entry(b"k", b"2")),
                field(10, &entry(b"K", b"3")),
            ]
            .concat(),
        ),
    ]
}

/// Rejected by prost reading only what the server reads, so by the parser too.
fn invalid() -> Vec<Vec<u8>> {
    let huge = |len: u64| [key(1, LEN), varint(len)].concat();
    vec![
        // Truncated: a length past the end, a varint cut short, a fixed field cut short.
        huge(1),
        huge(1 << 32),
        huge(u64::MAX >> 1),
        huge(u64::MAX),
        vec![0x08],
        vec![0x08, 0x80],
        [key(2, I64), vec![0; 7]].concat(),
        [key(2, I32), vec![0; 3]].concat(),
        // Varints: eleven bytes, a tenth byte past 1, a key past 32 bits, tag 0, wire types 6 and 7.
        [key(2, VARINT), vec![0xff; 10], vec![0x01]].concat(),
        [key(2, VARINT), vec![0xff; 9], vec![0x02]].concat(),
        [vec![0x80; 4], vec![0x10]].concat(),
        vec![0x02, 0x00],
        vec![0x0e],
        vec![0x0f],
        // Invalid UTF-8 in a read string.
        http(&field(4, b"/\xff")),
        http(&field(2, b"G\xc0")),
        http(&field(1, b"\xed\xa0\x80")),
        http(&field(3, &entry(b"a\xff", b"v"))),
        http(&field(3, &entry(b"a", b"\xff"))),
        http(&raw_header(&field(1, b"\xff"))),
        http(&raw_header(&field(2, b"\xff"))),
        source(&field(4, b"\xff")),
        source(&field(5, b"\xff")),
        address(&field(1, &field(2, b"\xff"))),
        address(&field(1, &field(4, b"\xff"))),
        attributes(&field(10, &entry(b"\xff", b""))),
        // A read field with the wrong wire type.
        number(1, 1),
        attributes(&number(4, 1)),
        attributes(&number(1, 1)),
        attributes(&number(10, 1)),
        attributes(&number(11, 1)),
        http(&number(4, 1)),
        http(&[key(3, I32), vec![0; 4]].concat()),
        http(&number(13, 1)),
        http(&field(13, &number(1, 1))),
        http(&raw_header(&number(3, 1))),
        address(&number(1, 1)),
        address(&number(2, 1)),
        address(&field(1, &field(3, b"80"))),
        // Groups: a stray end, a mismatched end, one never closed.
        key(2, END),
        [key(2, START), key(3, END)].concat(),
        [key(2, START), number(1, 1)].concat(),
        http(&[key(9, START), key(8, END)].concat()),
        // A nested message overrunning its parent.
        attributes(&[key(1, LEN), varint(5)].concat()),
        // Metadata prost cannot decode.
        attributes(&field(
            11,
            &field(1, &entry(b"ns", &field(1, &entry(b"k", b"\xff")))),
        )),
        attributes(&field(11, &field(1, b"\x0a"))),
    ]
}

/// Rejected by prost's whole decode only because of fields the server never reads.
fn unread_field_errors() -> Vec<Vec<u8>> {
    vec![
        http(&field(7, b"q=\xff")),
        http(&field(10, b"\xff")),
        http(&number(7, 1)),
        http(&field(9, b"")),
        attributes(&number(2, 1)),
        attributes(&field(2, &field(4, b"\xff"))),
        attributes(&field(12, &field(1, b"\xff"))),
        attributes(&field(13, &number(1, 1))),
        attributes(&field(4, &number(1, 1))),
        source(&field(2, b"\xff")),
        source(&field(3, &entry(b"\xff", b""))),
        address(&field(2, &field(1, b"\xff"))),
        address(&field(2, b"\xff\xff")),
        address(&field(3, &number(1, 1))),
        address(&field(1, &field(1, b""))),
    ]
}

#[test]
fn structured_requests_read_as_prost_reads_them() {
    for bytes in structured_requests() {
        assert_eq!(run(&bytes), Agreement::Equal, "{bytes:02x?}");
    }
}

#[test]
fn odd_but_valid_encodings_read_as_prost_reads_them() {
    for bytes in valid_oddities() {
        assert_eq!(run(&bytes), Agreement::Equal, "{bytes:02x?}");
    }
}

#[test]
fn what_prost_rejects_in_a_read_field_is_rejected() {
    for bytes in invalid() {
        assert_eq!(run(&bytes), Agreement::Rejected, "{bytes:02x?}");
        assert!(parse(&bytes).is_err());
    }
}

#[test]
fn errors_in_unread_fields_are_skipped_as_opaque() {
    for bytes in unread_field_errors() {
        assert_eq!(run(&bytes), Agreement::UnreadFieldRejected, "{bytes:02x?}");
    }
}

#[test]
fn every_truncation_and_single_byte_change_agrees() {
    let mut inputs = structured_requests();
    inputs.extend(valid_oddities());
    let mut runs = [0usize; 3];
    for bytes in &inputs {
        for end in 0..bytes.len() {
            count(&mut runs, run(&bytes[..end]));
        }
        for at in 0..bytes.len() {
            for value in [
                0x00, 0x01, 0x02, 0x07, 0x0a, 0x12, 0x1a, 0x7f, 0x80, 0xc0, 0xff,
            ] {
                let mut changed = bytes.clone();
                changed[at] = value;
                count(&mut runs, run(&changed));
            }
        }
    }
    // Each outcome is reached: the mutations exercise the parser's every answer.
    assert!(runs.iter().all(|&n| n > 100), "{runs:?}");
}

fn count(runs: &mut [usize; 3], agreement: Agreement) {
    runs[match agreement {
        Agreement::Equal => 0,
        Agreement::UnreadFieldRejected => 1,
        Agreement::Rejected => 2,
    }] += 1;
}

/// prost's recursion limit (100 from the top, one per message, map entry and group) holds in skipped
/// groups and in the metadata alike.
#[test]
fn nesting_is_limited_where_prost_limits_it() {
    let groups = |depth: u32| {
        let open: Vec<u8> = (0..depth).flat_map(|_| key(2, START)).collect();
        let close: Vec<u8> = (0..depth).flat_map(|_| key(2, END)).collect();
        [open, number(1, 1), close].concat()
    };
    let mut outcomes = Vec::new();
    for depth in 95..=101 {
        outcomes.push(run(&groups(depth)));
        outcomes.push(run(&http(&groups(depth))));
    }
    assert!(outcomes.contains(&Agreement::Equal) && outcomes.contains(&Agreement::Rejected));
    assert_eq!(run(&groups(99)), Agreement::Equal);
    assert_eq!(run(&groups(100)), Agreement::Rejected);

    // Lists in lists in the metadata's Struct.
    let nested = |depth: usize| {
        let mut value = serde_json::json!(1);
        for _ in 0..depth {
            value = serde_json::json!([value]);
        }
        structured(&[], |a, _| {
            a.metadata_context = Some(metadata(serde_json::json!({"ns": {"k": value}})));
        })
    };
    let outcomes: Vec<Agreement> = (40..52).map(|depth| run(&nested(depth))).collect();
    assert!(
        outcomes.contains(&Agreement::Equal) && outcomes.contains(&Agreement::Rejected),
        "{outcomes:?}"
    );
}

#[test]
fn a_long_header_map_keeps_the_last_value_of_each_name() {
    let mut fields = Vec::new();
    for round in 0..3 {
        for i in 0..200 {
            let value = format!("{round}");
            fields.extend(field(
                3,
                &entry(format!("x-h-{i}").as_bytes(), value.as_bytes()),
            ));
        }
    }
    let bytes = http(&fields);
    assert_eq!(run(&bytes), Agreement::Equal);
    let request = parse(&bytes).unwrap();
    let view = request.view();
    assert_eq!(view.headers.len(), 200);
    assert_eq!(view.headers.get("x-h-0"), Some("2"));
    assert_eq!(view.headers.get("x-h-199"), Some("2"));
    assert_eq!(
        view.headers.names().next(),
        Some("x-h-0"),
        "first place kept"
    );
}

#[test]
fn the_view_reads_the_documented_fields() {
    let bytes = [
        http(
            &[
                field(3, &entry(b"x-request-id", b"r-1")),
                field(3, &entry(b"Authorization", b"Bearer a")),
                field(3, &entry(b"Authorization", b"Bearer b")),
                text(2, "POST"),
                text(4, "/a/b?c=d"),
                text(5, "h"),
                text(6, "https"),
                text(1, "stream"),
            ]
            .concat(),
        ),
        address(
            &[
                field(1, &[text(2, "10.1.2.3"), number(3, 4433)].concat()),
                field(2, b""),
            ]
            .concat(),
        ),
        source(&[text(4, "spiffe://x"), text(5, "pem")].concat()),
        attributes(&field(10, &entry(b"team", b"payments"))),
    ]
    .concat();
    let request = parse(&bytes).unwrap();
    let view = request.view();
    assert_eq!(view.method, "POST");
    assert_eq!((view.path, view.query), ("/a/b", "c=d"));
    assert_eq!((view.host, view.scheme), ("h", "https"));
    assert_eq!(view.request_id, "r-1");
    assert_eq!(view.headers.get("Authorization"), Some("Bearer b"));
    assert_eq!(view.headers.get("authorization"), None, "exact names");
    assert_eq!(view.headers.count("Authorization"), 1);
    assert_eq!(view.context_extension("team"), Some("payments"));
    assert_eq!(
        (view.peer_principal, view.peer_certificate),
        ("spiffe://x", "pem")
    );
    assert_eq!(request.source_address(), None, "the later pipe wins");
    assert!(view.metadata.is_none());
}

#[test]
fn errors_name_the_field() {
    assert_eq!(
        parse(&http(&field(4, b"\xff"))).unwrap_err(),
        WireError::Utf8("HttpRequest.path")
    );
    assert_eq!(
        parse(&http(&number(4, 1))).unwrap_err(),
        WireError::WireType("HttpRequest.path")
    );
    assert_eq!(parse(&[0x0a, 0x05]).unwrap_err(), WireError::Truncated);
}
