//! Wire compatibility with Envoy's own protos: a client built on the `envoy-types` crate (generated from
//! Envoy's data-plane-api) calls our server and decodes our answers; and a request encoded from Envoy's
//! types decodes into ours field for field.

use portcullis_test as common;

use std::collections::HashMap;

use common::*;
use envoy_types::pb::envoy::config::core::v3 as envoy_core;
use envoy_types::pb::envoy::service::auth::v3 as envoy_auth;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use prost::Message;

const AUD: &str = "api";

fn envoy_request(headers: &[(&str, &str)]) -> envoy_auth::CheckRequest {
    envoy_auth::CheckRequest {
        attributes: Some(envoy_auth::AttributeContext {
            source: Some(envoy_auth::attribute_context::Peer {
                principal: "spiffe://cluster.local/ns/a/sa/b".into(),
                certificate: "-----BEGIN%20CERTIFICATE-----".into(),
                address: Some(envoy_core::Address {
                    address: Some(envoy_core::address::Address::SocketAddress(
                        envoy_core::SocketAddress {
                            address: "10.1.2.3".into(),
                            port_specifier: Some(
                                envoy_core::socket_address::PortSpecifier::PortValue(4242),
                            ),
                            ..Default::default()
                        },
                    )),
                }),
                ..Default::default()
            }),
            request: Some(envoy_auth::attribute_context::Request {
                time: None,
                http: Some(envoy_auth::attribute_context::HttpRequest {
                    id: "abc".into(),
                    method: "POST".into(),
                    path: "/v1/things?q=1".into(),
                    host: "api.example.com".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/2".into(),
                    size: 12,
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
            }),
            context_extensions: HashMap::from([("route".to_owned(), "admin".to_owned())]),
            tls_session: Some(envoy_auth::attribute_context::TlsSession {
                sni: "api.example.com".into(),
            }),
            ..Default::default()
        }),
    }
}

#[test]
fn envoy_encoded_requests_decode_into_our_types() {
    let bytes = envoy_request(&[("authorization", "Bearer x"), ("x-b", "1,2")]).encode_to_vec();
    let ours = portcullis::pb::auth::CheckRequest::decode(bytes.as_slice()).unwrap();
    let attrs = ours.attributes.as_ref().unwrap();
    let source = attrs.source.as_ref().unwrap();
    assert_eq!(source.principal, "spiffe://cluster.local/ns/a/sa/b");
    assert_eq!(source.certificate, "-----BEGIN%20CERTIFICATE-----");
    match source.address.as_ref().unwrap().address.as_ref().unwrap() {
        portcullis::pb::core::address::Address::SocketAddress(s) => {
            assert_eq!(s.address, "10.1.2.3");
            assert_eq!(
                s.port_specifier,
                Some(portcullis::pb::core::socket_address::PortSpecifier::PortValue(4242))
            );
        }
        other => panic!("{other:?}"),
    }
    let http = attrs.request.as_ref().unwrap().http.as_ref().unwrap();
    assert_eq!(
        (http.method.as_str(), http.path.as_str(), http.host.as_str()),
        ("POST", "/v1/things?q=1", "api.example.com")
    );
    assert_eq!(
        (http.scheme.as_str(), http.protocol.as_str(), http.size),
        ("https", "HTTP/2", 12)
    );
    assert_eq!(http.headers["x-b"], "1,2");
    assert_eq!(attrs.context_extensions["route"], "admin");
    assert_eq!(attrs.tls_session.as_ref().unwrap().sni, "api.example.com");
}

#[tokio::test]
async fn an_envoy_types_client_calls_our_server_and_decodes_every_answer() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k1");
    idp.set_keys(&[&key]);
    let yaml = format!(
        "server: {{drain_seconds: 0}}\nanswers: {{claims_in_metadata: true}}\nproviders:\n  - {{name: p, type: jwt, issuer: '{}', audiences: [{AUD}]}}",
        idp.issuer
    );
    let server = TestServer::start(&yaml).await.ready().await;
    let mut client = AuthorizationClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();

    // Allow: OK status, ok_response with overwrite headers and removals, dynamic metadata.
    let auth = format!("Bearer {}", key.token(&claims(&idp.issuer, AUD)));
    let answer = client
        .check(envoy_request(&[
            ("authorization", &auth),
            ("x-auth-role", "admin"),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status.as_ref().unwrap().code, 0);
    let Some(HttpResponse::OkResponse(ok)) = &answer.http_response else {
        panic!("expected ok_response: {answer:?}")
    };
    let subject = ok
        .headers
        .iter()
        .find(|h| h.header.as_ref().unwrap().key == "x-auth-subject")
        .unwrap();
    assert_eq!(subject.header.as_ref().unwrap().value, "user-1");
    assert_eq!(
        subject.append_action(),
        envoy_core::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd
    );
    assert_eq!(ok.headers_to_remove, vec!["x-auth-role"]);
    let metadata = answer.dynamic_metadata.as_ref().unwrap();
    assert!(metadata.fields.contains_key("claims"));

    // Deny: UNAUTHENTICATED with a 401 denied_response.
    let answer = client.check(envoy_request(&[])).await.unwrap().into_inner();
    assert_eq!(answer.status.as_ref().unwrap().code, 16);
    let Some(HttpResponse::DeniedResponse(denied)) = &answer.http_response else {
        panic!("expected denied_response: {answer:?}")
    };
    assert_eq!(
        denied.status.as_ref().unwrap().code(),
        envoy_types::pb::envoy::r#type::v3::StatusCode::Unauthorized
    );
    assert!(denied
        .headers
        .iter()
        .any(|h| h.header.as_ref().unwrap().key == "www-authenticate"));

    // Error: with the IdP's keys never loaded, an error_response (Envoy 1.37+) and UNAVAILABLE.
    let down = FakeIdp::start().await;
    down.set_mode(IdpMode::Fail500);
    let yaml = format!(
        "server: {{drain_seconds: 0}}\nanswers: {{claims_in_metadata: true}}\nproviders:\n  - {{name: p, type: jwt, issuer: '{}', audiences: [{AUD}]}}",
        down.issuer
    );
    let unready = TestServer::start(&yaml).await;
    let mut client = AuthorizationClient::connect(format!("http://{}", unready.grpc))
        .await
        .unwrap();
    let auth = format!("Bearer {}", key.token(&claims(&down.issuer, AUD)));
    let answer = client
        .check(envoy_request(&[("authorization", &auth)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status.as_ref().unwrap().code, 14);
    let Some(HttpResponse::ErrorResponse(error)) = &answer.http_response else {
        panic!("expected error_response: {answer:?}")
    };
    assert_eq!(
        error.status.as_ref().unwrap().code(),
        envoy_types::pb::envoy::r#type::v3::StatusCode::ServiceUnavailable
    );
}
