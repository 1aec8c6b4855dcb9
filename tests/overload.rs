//! Overload and bounds over real gRPC: the concurrency limit answers RESOURCE_EXHAUSTED at once, the
//! caller's deadline answers DEADLINE_EXCEEDED before a slow upstream does, oversized messages and
//! requests with too many headers are refused, and a Check with 40k client identity headers is answered
//! correctly in time linear in their number.

use portcullis_test as common;

use std::time::{Duration, Instant};

use common::upstream::{FakeUpstream, Mode};
use common::*;
use serde_json::json;

const AUD: &str = "https://api.example.com/";

async fn introspection_server(up: &FakeUpstream, server: &str) -> TestServer {
    let yaml = format!(
        "server: {{drain_seconds: 0, {server}}}
providers:
  - name: opaque
    type: introspection
    endpoint: {}
    client_id: portcullis
    client_secret: {{env: INTROSPECTION_SECRET}}
    upstream: {{timeout_seconds: 10}}
",
        up.url("/introspect")
    );
    let secrets = portcullis::io::sources_with(
        [("INTROSPECTION_SECRET".to_owned(), "s3cret".to_owned())].into(),
    );
    TestServer::start_with(&yaml, secrets, portcullis::Clock::system())
        .await
        .ready()
        .await
}

fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

async fn wait_in_flight(server: &TestServer, want: f64) {
    for _ in 0..200 {
        if sample(&server.metrics().await, "portcullis_checks_in_flight") == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("checks in flight never reached {want}");
}

#[tokio::test]
async fn past_max_concurrent_checks_a_check_is_refused_at_once() {
    let up = FakeUpstream::start().await;
    up.answer(
        "introspect:slow",
        200,
        json!({"active": true, "sub": "svc", "exp": now() + 600}),
    );
    up.set_mode(Mode::Slow(Duration::from_millis(1500)));
    let server = introspection_server(&up, "max_concurrent_checks: 1").await;

    let mut first_client = server.client().await;
    let first = tokio::spawn(async move {
        first_client
            .check(request(&[("authorization", "Bearer slow")]))
            .await
    });
    wait_in_flight(&server, 1.0).await;

    // The one permit is taken: refused at once, while the first still waits on the upstream.
    let refused = server
        .client()
        .await
        .check(request(&[("authorization", "Bearer other")]))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(!first.is_finished(), "refused before the first check ended");

    let answer = first.await.unwrap().unwrap().into_inner();
    ok(&answer);
    wait_in_flight(&server, 0.0).await;
    let metrics = server.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "portcullis_checks_rejected_total{reason=\"overloaded\",transport=\"grpc\"}"
        ),
        1.0,
        "{metrics}"
    );
    // The permit came back: the next check is decided.
    up.set_mode(Mode::Normal);
    ok(&server.check_bearer("slow").await);
}

#[tokio::test]
async fn a_deadline_shorter_than_a_slow_upstream_answers_deadline_exceeded() {
    let up = FakeUpstream::start().await;
    up.set_mode(Mode::Slow(Duration::from_secs(3)));
    let server = introspection_server(&up, "").await;

    let mut slow = tonic::Request::new(request(&[("authorization", "Bearer slow")]));
    slow.set_timeout(Duration::from_millis(300));
    let status = server.client().await.check(slow).await.unwrap_err();
    // The client sets its own timer to the same deadline: on a busy machine it may fire first (CANCELLED)
    // a moment before the server's DEADLINE_EXCEEDED arrives. What the server did is read from its
    // metrics: it gave up at the deadline (1 s or more before the upstream's 3 s), without an answer.
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    let series =
        "portcullis_checks_rejected_total{reason=\"deadline_exceeded\",transport=\"grpc\"}";
    for _ in 0..200 {
        if sample(&server.metrics().await, series) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let metrics = server.metrics().await;
    assert_eq!(sample(&metrics, series), 1.0, "{metrics}");
    wait_in_flight(&server, 0.0).await;

    // A deadline long enough is no trouble.
    up.set_mode(Mode::Normal);
    up.answer(
        "introspect:fast",
        200,
        json!({"active": true, "sub": "svc", "exp": now() + 600}),
    );
    let mut fast = tonic::Request::new(request(&[("authorization", "Bearer fast")]));
    fast.set_timeout(Duration::from_secs(5));
    ok(&server
        .client()
        .await
        .check(fast)
        .await
        .unwrap()
        .into_inner());
}

fn jwt_config(idp: &FakeIdp, server: &str) -> String {
    format!(
        "server: {{drain_seconds: 0, {server}}}
providers:
  - name: people
    type: jwt
    issuer: {}
    audiences: [{AUD}]
",
        idp.issuer
    )
}

#[tokio::test]
async fn more_headers_than_max_headers_is_a_denial_and_a_large_message_is_refused() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k1");
    idp.set_keys(&[&key]);
    let server = TestServer::start(&jwt_config(
        &idp,
        "max_headers: 8, max_request_bytes: 16384",
    ))
    .await
    .ready()
    .await;
    let auth = format!("Bearer {}", key.token(&claims(&idp.issuer, AUD)));
    let names: Vec<String> = (0..7).map(|i| format!("x-extra-{i}")).collect();
    let mut headers: Vec<(&str, &str)> = vec![("authorization", &auth)];
    headers.extend(names.iter().map(|n| (n.as_str(), "v")));
    ok(&server.check(&headers).await);

    // One more: refused without being read, a valid token or not.
    headers.push(("x-extra-last", "v"));
    let refused = server.check(&headers).await;
    let deny = denied(&refused);
    assert_eq!(deny.status.as_ref().unwrap().code, 400);
    let body: serde_json::Value = serde_json::from_str(&deny.body).unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("portcullis_checks_total{decision=\"deny\",reason=\"too_many_headers\""),
        "{metrics}"
    );

    // A message past max_request_bytes never reaches the decision.
    let big = "x".repeat(20_000);
    let status = server
        .client()
        .await
        .check(request(&[("authorization", &auth), ("x-big", &big)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
}

/// A Check with `n` distinct client headers under the identity prefix, and a valid token.
fn many_headers(n: usize, auth: &str) -> portcullis::pb::auth::CheckRequest {
    let names: Vec<String> = (0..n).map(|i| format!("x-auth-forged-{i}")).collect();
    let mut headers: Vec<(&str, &str)> = vec![("authorization", auth)];
    headers.extend(names.iter().map(|n| (n.as_str(), "mallory")));
    request(&headers)
}

#[tokio::test]
async fn forty_thousand_identity_headers_are_all_removed_in_linear_time() {
    let idp = FakeIdp::start().await;
    let key = TestKey::rsa("k1");
    idp.set_keys(&[&key]);
    let server = TestServer::start(&jwt_config(
        &idp,
        "max_headers: 100000, max_request_bytes: 16777216",
    ))
    .await
    .ready()
    .await;
    let auth = format!("Bearer {}", key.token(&claims(&idp.issuer, AUD)));
    let small = many_headers(4_000, &auth);
    let large = many_headers(40_000, &auth);
    let mut client = server.client().await;

    let answer = client.check(large.clone()).await.unwrap().into_inner();
    let allowed = ok(&answer);
    assert_eq!(allowed.headers_to_remove.len(), 40_000);
    let removed: std::collections::HashSet<&str> = allowed
        .headers_to_remove
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(removed.len(), 40_000, "each once");
    assert!(removed.contains("x-auth-forged-0") && removed.contains("x-auth-forged-39999"));
    assert!(
        !removed.contains("x-auth-subject"),
        "ours are set, not removed"
    );
    assert_eq!(header(&allowed.headers, "x-auth-subject"), Some("user-1"));

    // Ten times the headers must cost about ten times the time, not a hundred: the best of five runs
    // of each, so a busy machine slows both alike. Quadratic work shows as a ratio near 100; the bound
    // leaves room for a machine running a parallel build.
    let mut best = [Duration::MAX; 2];
    for _ in 0..5 {
        for (i, req) in [&small, &large].into_iter().enumerate() {
            let start = Instant::now();
            client.check(req.clone()).await.unwrap();
            best[i] = best[i].min(start.elapsed());
        }
    }
    let [small_time, large_time] = best;
    let ratio = large_time.as_secs_f64() / small_time.as_secs_f64();
    eprintln!("4k headers: {small_time:?}, 40k headers: {large_time:?}, ratio {ratio:.1}");
    assert!(
        ratio < 50.0,
        "4k headers: {small_time:?}, 40k headers: {large_time:?} (ratio {ratio:.1}): not linear"
    );
}
