//! Generated protobuf code, kept at the edge: only `server/` and the `check` client use these types, and
//! [`json`] is the one conversion between `google.protobuf.Struct` and JSON.

#![allow(clippy::all, missing_docs, rustdoc::all)]

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
    /// Encoded `fields` entries (tag 1), as [`Struct::encode_entries`] writes them.
    pub encoded: Option<std::sync::Arc<[u8]>>,
}

impl Struct {
    /// `fields`' entries, encoded: what [`Struct::encoded`] holds.
    pub fn encode_entries(
        fields: &std::collections::BTreeMap<String, prost_types::Value>,
    ) -> Vec<u8> {
        let len = prost::encoding::btree_map::encoded_len(
            prost::encoding::string::encoded_len,
            prost::encoding::message::encoded_len,
            1,
            fields,
        );
        let mut buf = Vec::with_capacity(len);
        prost::encoding::btree_map::encode(
            prost::encoding::string::encode,
            prost::encoding::string::encoded_len,
            prost::encoding::message::encode,
            prost::encoding::message::encoded_len,
            1,
            fields,
            &mut buf,
        );
        buf
    }
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

    #[cfg(test)]
    mod tests {
        use serde_json::json;

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
