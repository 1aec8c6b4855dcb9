//! The gRPC Check reads the message's bytes itself (`server/wire.rs`), so these tests send bytes, not a
//! generated `CheckRequest`: a message it cannot read is answered `INTERNAL` (as tonic answers a message
//! prost cannot decode) and is never allowed; concatenated messages merge as protobuf says; any other
//! method of the service is `UNIMPLEMENTED`.

use portcullis_test as common;

use bytes::{Buf as _, BufMut as _, Bytes};
use common::*;
use portcullis::pb::auth::CheckResponse;
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// A gRPC client codec sending a message's bytes as they are.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = CheckResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = CheckResponse;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<CheckResponse>, tonic::Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        CheckResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// Sends `message` to `path` on a new connection.
async fn send_raw(
    server: &TestServer,
    path: &'static str,
    message: Vec<u8>,
) -> Result<CheckResponse, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(Bytes::from(message)),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// An API key provider: a request with `x-api-key: valid-key` is allowed.
async fn server() -> TestServer {
    let yaml = format!(
        "server: {{drain_seconds: 0}}
providers:
  - name: keys
    type: api_key
    credential: {{header: x-api-key}}
    keys: [{{sha256: '{}', principal: ci-bot}}]",
        portcullis::hash_key("valid-key"),
    );
    TestServer::start(&yaml).await.ready().await
}

fn allowed(response: &CheckResponse) -> bool {
    response.status.as_ref().is_some_and(|s| s.code == 0)
}

/// `CheckRequest.attributes.request.http` holding `fields` (raw protobuf), to append to a message:
/// protobuf merges it into the request before it.
fn http_fields(fields: &[u8]) -> Vec<u8> {
    let nest = |tag: u8, body: &[u8]| {
        let mut out = vec![tag << 3 | 2];
        prost::encoding::encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    };
    nest(1, &nest(4, &nest(2, fields)))
}

#[tokio::test]
async fn a_message_that_cannot_be_read_is_never_allowed() {
    let server = server().await;
    let valid = request(&[("x-api-key", "valid-key")]).encode_to_vec();
    let answer = send_raw(&server, CHECK, valid.clone()).await.unwrap();
    assert!(allowed(&answer), "{answer:?}");

    let unreadable = [
        // The path sent again, not UTF-8.
        [valid.as_slice(), &http_fields(b"\x22\x02/\xff")].concat(),
        // The valid message cut short.
        valid[..valid.len() - 1].to_vec(),
        // The path sent again as a number.
        [valid.as_slice(), &http_fields(b"\x20\x01")].concat(),
        // A group end nobody opened; a varint of eleven bytes.
        [valid.as_slice(), b"\x14"].concat(),
        [valid.as_slice(), b"\x10", &[0xff; 10], b"\x01"].concat(),
    ];
    for message in unreadable {
        let status = send_raw(&server, CHECK, message.clone()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
        assert!(
            status
                .message()
                .starts_with("failed to decode Protobuf message"),
            "{status:?}"
        );
        assert!(
            prost::Message::decode(message.as_slice())
                .map(|_: portcullis::pb::auth::CheckRequest| ())
                .is_err(),
            "prost rejects it too"
        );
    }

    // A field no check reads is skipped unread: an invalid `query` (field 7) is no reason to refuse.
    let unread = [valid.as_slice(), &http_fields(b"\x3a\x01\xff")].concat();
    assert!(allowed(&send_raw(&server, CHECK, unread).await.unwrap()));
}

#[tokio::test]
async fn concatenated_messages_merge_and_the_last_header_value_wins() {
    let server = server().await;
    let wrong = request(&[("x-api-key", "wrong-key")]).encode_to_vec();
    let valid = request(&[("x-api-key", "valid-key")]).encode_to_vec();
    let answer = send_raw(&server, CHECK, [wrong.as_slice(), &valid].concat())
        .await
        .unwrap();
    assert!(allowed(&answer), "{answer:?}");
    let answer = send_raw(&server, CHECK, [valid.as_slice(), &wrong].concat())
        .await
        .unwrap();
    assert!(!allowed(&answer), "{answer:?}");
}

#[tokio::test]
async fn other_methods_of_the_service_are_unimplemented() {
    let server = server().await;
    let valid = request(&[("x-api-key", "valid-key")]).encode_to_vec();
    let status = send_raw(&server, "/envoy.service.auth.v3.Authorization/Other", valid)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
}
