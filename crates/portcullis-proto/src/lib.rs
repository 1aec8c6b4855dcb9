//! portcullis-proto: the protobuf edge. Generated code (Envoy ext_authz v3, google.rpc) kept out of the
//! decision engine: only the server, the `check` client and the load generator use these types.
//!
//! # Layout
//! - `build.rs` and `proto/`: the `.proto` files, compiled with protox (pure Rust, no `protoc`) and
//!   tonic-prost-build; [`FILE_DESCRIPTOR_SET`] is what gRPC reflection serves.
//! - [`envoy`], [`google`] and their short names ([`auth`], [`core`], [`http_type`], [`rpc`]): the
//!   generated messages and the Authorization service.
//! - [`Struct`] and [`OkHttpResponse`]: hand-written messages that can carry already-encoded entries, so a
//!   cached identity's metadata and headers are encoded once.
//! - [`json`]: the one conversion between `google.protobuf.Struct` and JSON.
//! - [`wire`]: a Check request read straight from its bytes into the engine's `RequestView` (borrowed,
//!   no prost tree); `wire::differential` holds it to prost's reading (tests and the fuzz target).
//! - [`translate`]: the engine's proto-free `Answer` as Envoy's `CheckResponse`.
//!
//! It imports only `portcullis-core` (the request view and the answer), which imports nothing of it:
//! the engine never compiles protobuf.

#![allow(clippy::all, missing_docs, rustdoc::all)]

pub mod translate;
pub mod wire;

pub mod envoy {
    pub mod config {
        pub mod core {
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    pub mod r#type {
        pub mod v3 {
            tonic::include_proto!("envoy.r#type.v3");
        }
    }
    pub mod service {
        pub mod auth {
            pub mod v3 {
                tonic::include_proto!("envoy.service.auth.v3");
                pub use crate::OkHttpResponse;
            }
        }
    }
}

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// The encoded file descriptor set of `proto/`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/portcullis_descriptor.bin"));

pub use envoy::config::core::v3 as core;
pub use envoy::r#type::v3 as http_type;
pub use envoy::service::auth::v3 as auth;
pub use google::rpc;

/// `google.protobuf.Struct` as every generated message holds it: prost's map of fields, plus map entries
/// already encoded (`encoded`), written after `fields`. A cached identity's metadata is encoded once and
/// then copied into each answer as bytes instead of being rebuilt as a map of values per request: protobuf
/// map entries in any order decode as one map (the protobuf encoding guide, "Maps"). The two must not
/// name the same key. Decoding fills `fields` only.
#[derive(Clone, Default, PartialEq)]
pub struct Struct {
    pub fields: std::collections::BTreeMap<String, prost_types::Value>,
    /// Encoded `fields` entries (tag 1), as [`json::EntryWriter`] writes them.
    pub encoded: Option<std::sync::Arc<[u8]>>,
}

impl std::fmt::Debug for Struct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Struct")
            .field("fields", &self.fields)
            .field("encoded", &self.encoded.as_ref().map(|e| e.len()))
            .finish()
    }
}

impl prost::Message for Struct {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        prost::encoding::btree_map::encode(
            prost::encoding::string::encode,
            prost::encoding::string::encoded_len,
            prost::encoding::message::encode,
            prost::encoding::message::encoded_len,
            1,
            &self.fields,
            buf,
        );
        if let Some(encoded) = &self.encoded {
            buf.put_slice(encoded);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag == 1 {
            prost::encoding::btree_map::merge(
                prost::encoding::string::merge,
                prost::encoding::message::merge,
                &mut self.fields,
                buf,
                ctx,
            )
        } else {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        prost::encoding::btree_map::encoded_len(
            prost::encoding::string::encoded_len,
            prost::encoding::message::encoded_len,
            1,
            &self.fields,
        ) + self.encoded.as_ref().map_or(0, |e| e.len())
    }

    fn clear(&mut self) {
        self.fields.clear();
        self.encoded = None;
    }
}

/// `envoy.service.auth.v3.OkHttpResponse`, with its `headers` (field 2) in two parts: `encoded_headers`,
/// `headers` entries already encoded (a cached identity's headers, encoded once) and written first, then
/// `headers`.
/// Repeated fields may be written in any number of runs; they decode as one list, so Envoy sees one
/// `headers` list. Decoding fills `headers` only.
#[derive(Clone, Default, PartialEq, Debug)]
pub struct OkHttpResponse {
    pub headers: Vec<core::HeaderValueOption>,
    pub encoded_headers: Option<std::sync::Arc<[u8]>>,
    pub dynamic_metadata: Option<Struct>,
    pub headers_to_remove: Vec<String>,
    pub response_headers_to_add: Vec<core::HeaderValueOption>,
    pub query_parameters_to_set: Vec<core::QueryParameter>,
    pub query_parameters_to_remove: Vec<String>,
}

impl prost::Message for OkHttpResponse {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        use prost::encoding::{message, string};
        // The encoded run first: the answer's headers keep their order (the identity's come first).
        if let Some(encoded) = &self.encoded_headers {
            buf.put_slice(encoded);
        }
        message::encode_repeated(2, &self.headers, buf);
        if let Some(metadata) = &self.dynamic_metadata {
            message::encode(3, metadata, buf);
        }
        string::encode_repeated(5, &self.headers_to_remove, buf);
        message::encode_repeated(6, &self.response_headers_to_add, buf);
        message::encode_repeated(7, &self.query_parameters_to_set, buf);
        string::encode_repeated(8, &self.query_parameters_to_remove, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        use prost::encoding::{message, string};
        match tag {
            2 => message::merge_repeated(wire_type, &mut self.headers, buf, ctx),
            3 => message::merge(
                wire_type,
                self.dynamic_metadata.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            5 => string::merge_repeated(wire_type, &mut self.headers_to_remove, buf, ctx),
            6 => message::merge_repeated(wire_type, &mut self.response_headers_to_add, buf, ctx),
            7 => message::merge_repeated(wire_type, &mut self.query_parameters_to_set, buf, ctx),
            8 => string::merge_repeated(wire_type, &mut self.query_parameters_to_remove, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        use prost::encoding::{message, string};
        message::encoded_len_repeated(2, &self.headers)
            + self.encoded_headers.as_ref().map_or(0, |e| e.len())
            + self
                .dynamic_metadata
                .as_ref()
                .map_or(0, |m| message::encoded_len(3, m))
            + string::encoded_len_repeated(5, &self.headers_to_remove)
            + message::encoded_len_repeated(6, &self.response_headers_to_add)
            + message::encoded_len_repeated(7, &self.query_parameters_to_set)
            + string::encoded_len_repeated(8, &self.query_parameters_to_remove)
    }

    fn clear(&mut self) {
        *self = OkHttpResponse::default();
    }
}

/// `google.protobuf.Struct` ⇄ JSON, the one pair every caller uses (Envoy's filter metadata in, our
/// dynamic metadata and explanations out, the `check` client's report).
pub mod json {
    use prost_types::value::Kind;
    use serde_json::{Map, Value};

    /// A `Struct` as a JSON object. Integral numbers (`exp`, `iat`) come back as JSON integers.
    pub fn from_struct(s: &super::Struct) -> Map<String, Value> {
        from_fields(&s.fields)
    }

    /// A `Struct`'s fields as a JSON object.
    pub fn from_fields(
        fields: &std::collections::BTreeMap<String, prost_types::Value>,
    ) -> Map<String, Value> {
        fields
            .iter()
            .map(|(k, v)| (k.clone(), from_value(v)))
            .collect()
    }

    pub fn from_value(v: &prost_types::Value) -> Value {
        match &v.kind {
            None | Some(Kind::NullValue(_)) => Value::Null,
            Some(Kind::BoolValue(b)) => Value::Bool(*b),
            Some(Kind::NumberValue(n)) => match serde_json::Number::from_f64(*n) {
                None => Value::Null,
                Some(_) if n.fract() == 0.0 && n.abs() < 9.0e15 => Value::from(*n as i64),
                Some(number) => Value::Number(number),
            },
            Some(Kind::StringValue(s)) => Value::String(s.clone()),
            Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(from_value).collect()),
            Some(Kind::StructValue(s)) => Value::Object(from_fields(&s.fields)),
        }
    }

    /// A JSON object as a `Struct`.
    pub fn to_struct(map: &Map<String, Value>) -> prost_types::Struct {
        prost_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        }
    }

    pub fn to_value(value: &Value) -> prost_types::Value {
        let kind = match value {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Array(items) => Kind::ListValue(prost_types::ListValue {
                values: items.iter().map(to_value).collect(),
            }),
            Value::Object(map) => Kind::StructValue(to_struct(map)),
        };
        prost_types::Value { kind: Some(kind) }
    }

    /// A string value.
    pub fn string(s: &str) -> prost_types::Value {
        prost_types::Value {
            kind: Some(Kind::StringValue(s.to_owned())),
        }
    }

    /// Writes a `Struct`'s map entries (field 1), for `entries` in order, straight from our values: no
    /// `prost_types` tree is built (deep-copying every claim into one cost more than the rest of an
    /// uncached answer). The bytes decode as [`to_struct`] would have built the map.
    pub struct EntryWriter<'b> {
        buf: &'b mut Vec<u8>,
    }

    /// A value [`EntryWriter`] writes: a JSON value, a string, or a list of strings.
    pub enum Entry<'v> {
        Json(&'v Value),
        Object(&'v Map<String, Value>),
        Str(&'v str),
        Strings(&'v [String]),
        /// A `Struct` of string lists (the identity's attributes).
        StringLists(&'v std::collections::BTreeMap<String, Vec<String>>),
    }

    impl<'b> EntryWriter<'b> {
        pub fn new(buf: &'b mut Vec<u8>) -> EntryWriter<'b> {
            EntryWriter { buf }
        }

        /// One map entry: `key` to the `google.protobuf.Value` of `value`.
        pub fn entry(&mut self, key: &str, value: Entry<'_>) -> &mut Self {
            entry(key, value_len(&value), self.buf, |buf| {
                encode_value(&value, buf)
            });
            self
        }
    }

    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

    /// A length-delimited field's size: its key (one byte: every tag here is below 16), length, body.
    fn delimited(len: usize) -> usize {
        1 + encoded_len_varint(len as u64) + len
    }

    fn write_delimited(tag: u32, len: usize, buf: &mut Vec<u8>) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
    }

    /// The size of an entry's body: key (field 1) and value (field 2).
    fn entry_len(key: &str, value_len: usize) -> usize {
        delimited(key.len()) + delimited(value_len)
    }

    fn entry(key: &str, value_len: usize, buf: &mut Vec<u8>, value: impl FnOnce(&mut Vec<u8>)) {
        write_delimited(1, entry_len(key, value_len), buf);
        write_delimited(1, key.len(), buf);
        buf.extend_from_slice(key.as_bytes());
        write_delimited(2, value_len, buf);
        value(buf);
    }

    /// The size of a `Value`'s body.
    fn value_len(value: &Entry<'_>) -> usize {
        match value {
            Entry::Json(v) => json_len(v),
            Entry::Object(map) => delimited(object_len(map)),
            Entry::Str(s) => delimited(s.len()),
            Entry::Strings(items) => delimited(strings_len(items)),
            Entry::StringLists(lists) => delimited(string_lists_len(lists)),
        }
    }

    fn encode_value(value: &Entry<'_>, buf: &mut Vec<u8>) {
        match value {
            Entry::Json(v) => encode_json(v, buf),
            Entry::Object(map) => encode_object(map, buf),
            Entry::Str(s) => encode_str(s, buf),
            Entry::Strings(items) => encode_strings(items, buf),
            Entry::StringLists(lists) => {
                write_delimited(5, string_lists_len(lists), buf);
                for (key, items) in lists.iter() {
                    entry(key, delimited(strings_len(items)), buf, |buf| {
                        encode_strings(items, buf)
                    });
                }
            }
        }
    }

    fn strings_len(items: &[String]) -> usize {
        items.iter().map(|s| delimited(delimited(s.len()))).sum()
    }

    fn encode_strings(items: &[String], buf: &mut Vec<u8>) {
        write_delimited(6, strings_len(items), buf);
        for item in items {
            write_delimited(1, delimited(item.len()), buf);
            encode_str(item, buf);
        }
    }

    fn string_lists_len(lists: &std::collections::BTreeMap<String, Vec<String>>) -> usize {
        lists
            .iter()
            .map(|(k, items)| delimited(entry_len(k, delimited(strings_len(items)))))
            .sum()
    }

    fn encode_str(s: &str, buf: &mut Vec<u8>) {
        write_delimited(3, s.len(), buf);
        buf.extend_from_slice(s.as_bytes());
    }

    /// The size of a JSON value's `Value` body: `null_value` (1), `number_value` (2), `string_value`
    /// (3), `bool_value` (4), `struct_value` (5), `list_value` (6).
    fn json_len(value: &Value) -> usize {
        match value {
            Value::Null | Value::Bool(_) => 2,
            Value::Number(_) => 9,
            Value::String(s) => delimited(s.len()),
            Value::Array(items) => delimited(list_len(items)),
            Value::Object(map) => delimited(object_len(map)),
        }
    }

    fn list_len(items: &[Value]) -> usize {
        items.iter().map(|v| delimited(json_len(v))).sum()
    }

    fn object_len(map: &Map<String, Value>) -> usize {
        map.iter()
            .map(|(k, v)| delimited(entry_len(k, json_len(v))))
            .sum()
    }

    fn encode_object(map: &Map<String, Value>, buf: &mut Vec<u8>) {
        write_delimited(5, object_len(map), buf);
        for (key, value) in map {
            entry(key, json_len(value), buf, |buf| encode_json(value, buf));
        }
    }

    fn encode_json(value: &Value, buf: &mut Vec<u8>) {
        match value {
            Value::Null => {
                encode_key(1, WireType::Varint, buf);
                buf.push(0);
            }
            Value::Bool(b) => {
                encode_key(4, WireType::Varint, buf);
                buf.push(u8::from(*b));
            }
            Value::Number(n) => {
                encode_key(2, WireType::SixtyFourBit, buf);
                buf.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
            }
            Value::String(s) => encode_str(s, buf),
            Value::Array(items) => {
                write_delimited(6, list_len(items), buf);
                for item in items {
                    write_delimited(1, json_len(item), buf);
                    encode_json(item, buf);
                }
            }
            Value::Object(map) => encode_object(map, buf),
        }
    }

    #[cfg(test)]
    mod tests {
        use serde_json::json;

        #[test]
        fn entries_written_directly_decode_as_the_built_struct() {
            use prost::Message as _;
            let claims = json!({
                "sub": "auth0|alice", "exp": 1764681234, "ratio": 0.5, "big": 1e300, "neg": -3,
                "empty": "", "nothing": null, "yes": true, "no": false, "": "empty key",
                "permissions": ["read:a", "write:b"], "mixed": [1, "x", null, [], {}, [true]],
                "nested": {"deep": {"deeper": {"list": [{"k": "v"}]}}, "e": {}},
                "long": "x".repeat(300), "unicode": "zoë ✓",
            });
            let claims = claims.as_object().unwrap();
            let actors = vec!["agent-1".to_owned(), String::new()];
            let mut lists = std::collections::BTreeMap::new();
            lists.insert("groups".to_owned(), vec!["a".to_owned(), "b".to_owned()]);
            lists.insert("none".to_owned(), vec![]);
            let mut buf = Vec::new();
            super::EntryWriter::new(&mut buf)
                .entry("subject", super::Entry::Str("alice"))
                .entry("chain", super::Entry::Strings(&actors))
                .entry("attributes", super::Entry::StringLists(&lists))
                .entry("claims", super::Entry::Object(claims))
                .entry("one", super::Entry::Json(&claims["mixed"]));
            let decoded = prost_types::Struct::decode(&*buf).unwrap();

            let string = |s: &str| super::string(s);
            let list = |items: &[String]| prost_types::Value {
                kind: Some(prost_types::value::Kind::ListValue(
                    prost_types::ListValue {
                        values: items.iter().map(|s| string(s)).collect(),
                    },
                )),
            };
            let mut expected = std::collections::BTreeMap::new();
            expected.insert("subject".to_owned(), string("alice"));
            expected.insert("chain".to_owned(), list(&actors));
            expected.insert(
                "attributes".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
                        fields: lists.iter().map(|(k, v)| (k.clone(), list(v))).collect(),
                    })),
                },
            );
            expected.insert(
                "claims".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StructValue(super::to_struct(
                        claims,
                    ))),
                },
            );
            expected.insert("one".to_owned(), super::to_value(&claims["mixed"]));
            assert_eq!(decoded.fields, expected);
            // And back to the same JSON.
            let back = super::from_fields(&decoded.fields);
            assert_eq!(back["claims"], serde_json::Value::Object(claims.clone()));
        }

        #[test]
        fn json_round_trips_through_struct() {
            let original =
                json!({"exp": 1764681234, "ratio": 0.5, "a": [true, null, "x"], "o": {"n": -3}});
            let map = original.as_object().unwrap();
            let back = super::from_fields(&super::to_struct(map).fields);
            assert_eq!(serde_json::Value::Object(back), original);
        }
    }
}
