//! DPoP replay protection across replicas (RFC 9449 §11.1): two portcullis servers behind one real
//! `redis-server` on a free loopback port. A proof is single-use for the whole deployment only when the
//! replicas keep the proof digests in Redis (`state.backend: redis`); with in-memory state each replica
//! remembers only what it saw itself, so a captured proof can be replayed once on every other replica.
//! When Redis cannot answer, a DPoP-bound request fails closed (UNAVAILABLE, never an allow) and works
//! again once Redis is back.

use portcullis_test as common;

use std::time::Duration;

use common::redis::RedisServer;
use common::*;
use portcullis::pb::auth::CheckResponse;
use serde_json::json;

const URI: &str = "https://api.example.com/api/items";
const AUDIENCE: &str = "https://api.example.com/";

fn config(idp: &FakeIdp, state: &str) -> String {
    format!(
        "server: {{drain_seconds: 0}}
providers:
  - name: idp
    type: jwt
    issuer: {}
    audiences: [{AUDIENCE}]
    jwks_uri: {}
    algorithms: [ES256]
    dpop: {{mode: optional, algorithms: [ES256]}}
{state}
",
        idp.issuer,
        idp.jwks_uri()
    )
}

fn redis_state(redis: &RedisServer) -> String {
    format!(
        "state: {{backend: redis, url: '{}', key_prefix: 'dpop-test:', resync_seconds: 1}}",
        redis.url()
    )
}

async fn replica(idp: &FakeIdp, state: &str) -> TestServer {
    TestServer::start(&config(idp, state)).await.ready().await
}

async fn send(server: &TestServer, authorization: &str, proof: Option<&str>) -> CheckResponse {
    let mut headers = vec![("authorization", authorization)];
    if let Some(proof) = proof {
        headers.push(("dpop", proof));
    }
    let mut req = request_to("GET", "/api/items?x=1", &headers);
    http_of(&mut req).scheme = "https".into();
    server.send(req).await
}

async fn dpop(server: &TestServer, token: &str, proof: &str) -> CheckResponse {
    send(server, &format!("DPoP {token}"), Some(proof)).await
}

fn code(response: &CheckResponse) -> i32 {
    response.status.as_ref().map_or(-1, |s| s.code)
}

fn reason(response: &CheckResponse) -> &str {
    response.status.as_ref().map_or("", |s| s.message.as_str())
}

/// An IdP on loopback, a DPoP key and an access token bound to it (`cnf.jkt`).
struct Setup {
    idp: FakeIdp,
    idp_key: TestKey,
    holder: DpopHolder,
    token: String,
}

async fn setup() -> Setup {
    let idp = FakeIdp::start().await;
    let idp_key = TestKey::ec("idp");
    idp.set_keys(&[&idp_key]);
    let holder = DpopHolder::new("unused");
    let mut bound = claims(&idp.issuer, AUDIENCE);
    bound["cnf"] = json!({"jkt": holder.jkt()});
    let token = idp_key.token(&bound);
    Setup {
        idp,
        idp_key,
        holder,
        token,
    }
}

#[tokio::test]
async fn a_proof_used_on_one_replica_is_a_replay_on_the_other_through_redis() {
    let redis = RedisServer::start();
    let s = setup().await;
    let a = replica(&s.idp, &redis_state(&redis)).await;
    let b = replica(&s.idp, &redis_state(&redis)).await;

    let proof = s.holder.proof("GET", URI, &s.token);
    ok(&dpop(&a, &s.token, &proof).await);
    let replay = dpop(&b, &s.token, &proof).await;
    assert_eq!(code(&replay), 16, "UNAUTHENTICATED on B: {replay:?}");
    assert_eq!(reason(&replay), "dpop_proof_replayed");
    assert_eq!(denied(&replay).status.as_ref().unwrap().code, 401);
    // And back on A, too.
    assert_eq!(
        reason(&dpop(&a, &s.token, &proof).await),
        "dpop_proof_replayed"
    );

    // The other way round: first on B, then refused on A. Fresh proofs pass on either.
    let proof = s.holder.proof("GET", URI, &s.token);
    ok(&dpop(&b, &s.token, &proof).await);
    assert_eq!(
        reason(&dpop(&a, &s.token, &proof).await),
        "dpop_proof_replayed"
    );
    ok(&dpop(&a, &s.token, &s.holder.proof("GET", URI, &s.token)).await);
}

#[tokio::test]
async fn with_in_memory_state_each_replica_accepts_the_same_proof_once() {
    // Why a deployment of several replicas needs `state.backend: redis`: without it, a proof captured
    // after its use on A is accepted once more by B.
    let s = setup().await;
    let a = replica(&s.idp, "").await;
    let b = replica(&s.idp, "").await;

    let proof = s.holder.proof("GET", URI, &s.token);
    ok(&dpop(&a, &s.token, &proof).await);
    ok(&dpop(&b, &s.token, &proof).await);
    // Each one still refuses its own replay.
    assert_eq!(
        reason(&dpop(&a, &s.token, &proof).await),
        "dpop_proof_replayed"
    );
    assert_eq!(
        reason(&dpop(&b, &s.token, &proof).await),
        "dpop_proof_replayed"
    );
}

#[tokio::test]
async fn without_redis_a_dpop_request_fails_closed_and_recovers_when_redis_returns() {
    let mut redis = RedisServer::start();
    let s = setup().await;
    let a = replica(&s.idp, &redis_state(&redis)).await;
    let b = replica(&s.idp, &redis_state(&redis)).await;
    // An unbound token (no cnf) with the Bearer scheme: no proof, so no replay record is needed.
    let bearer = format!(
        "Bearer {}",
        s.idp_key.token(&claims(&s.idp.issuer, AUDIENCE))
    );
    ok(&dpop(&a, &s.token, &s.holder.proof("GET", URI, &s.token)).await);

    redis.stop();
    let proof = s.holder.proof("GET", URI, &s.token);
    for server in [&a, &b] {
        let response = dpop(server, &s.token, &proof).await;
        assert_eq!(
            code(&response),
            14,
            "UNAVAILABLE, not an allow: {response:?}"
        );
        assert_eq!(reason(&response), "dpop_replay_unavailable");
        // A fresh proof is refused too: the replica cannot tell whether another one saw it.
        let fresh = dpop(server, &s.token, &s.holder.proof("GET", URI, &s.token)).await;
        assert_eq!(code(&fresh), 14, "{fresh:?}");
        // Requests that need no replay record are unaffected.
        ok(&send(server, &bearer, None).await);
    }

    // Redis comes back (empty): the connection manager reconnects and proofs work again. The proof
    // refused during the outage was never recorded, so its first answered use is an allow.
    redis.restart();
    let mut recovered = None;
    for _ in 0..100 {
        let response = dpop(&a, &s.token, &proof).await;
        if code(&response) != 14 {
            recovered = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = recovered.expect("a DPoP request is answered within 10 s of Redis returning");
    ok(&recovered);
    // And shared again: B sees A's use.
    let mut replayed = false;
    for _ in 0..100 {
        let response = dpop(&b, &s.token, &proof).await;
        assert_ne!(
            code(&response),
            0,
            "never an allow of A's proof: {response:?}"
        );
        if reason(&response) == "dpop_proof_replayed" {
            replayed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(replayed, "B refuses A's proof as a replay after recovery");
}
