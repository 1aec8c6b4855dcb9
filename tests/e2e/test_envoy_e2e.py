"""Real-Envoy end-to-end tests: client ─► Envoy (ext_authz) ─► portcullis / echo upstream.

Every test runs once per Envoy version (E2E_ENVOY_VERSIONS, default 1.40.0 and 1.36.4): header
append semantics changed in Envoy 1.37, so identity-header overwrite is checked on both sides.
Tokens come from a real OpenID provider (oidc-provider, tests/e2e/oidc/server.mjs); portcullis
finds its keys by OIDC discovery. Run through scripts/test-e2e.sh.
"""

from __future__ import annotations

import base64
import json

import pytest

from conftest import PROVIDER_NAME, REALM, Envoy, start_envoy, start_portcullis

# HTTP codes of envoy.type.v3.StatusCode names used for ext_authz status_on_error.
STATUS_CODES = {"Forbidden": 403, "InternalServerError": 500, "BadGateway": 502,
                "ServiceUnavailable": 503, "GatewayTimeout": 504}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def bearer(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")


def upstream_headers(resp) -> dict[str, list[str]]:
    """Headers the echo upstream received (name -> every value, one per header line)."""
    assert resp.status == 200, f"expected 200 from upstream, got {resp.status}: {resp.body!r}"
    body = resp.json()
    assert "headers" in body, f"not the echo upstream: {body!r}"
    return body["headers"]


def ext_authz_config(envoy: Envoy) -> dict:
    listener = envoy.config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (authz,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"]
    return authz["typed_config"]


# ---------------------------------------------------------------------------------------------
# allowed requests


@pytest.mark.parametrize("client_id", ["e2e-client", "e2e-client-post"])
def test_valid_token_reaches_upstream_with_identity_headers(envoy, oidc, client_id):
    token = oidc.token(client_id, scope="read:data write:data")
    seen = upstream_headers(envoy.request("/things?x=1", headers=[bearer(token)]))

    assert seen.get("x-auth-subject") == [client_id]
    assert seen.get("x-auth-issuer") == [oidc.issuer]
    assert seen.get("x-auth-provider") == [PROVIDER_NAME]
    (scopes,) = seen.get("x-auth-scopes", [None])
    assert scopes is not None and set(scopes.split()) == {"read:data", "write:data"}


# ---------------------------------------------------------------------------------------------
# client-sent identity headers are never trusted


@pytest.mark.parametrize(
    "spoofed",
    [
        [("x-auth-subject", "mallory")],
        [("x-auth-subject", "mallory"), ("x-auth-subject", "mallory2")],
        [("X-Auth-Subject", "mallory")],
    ],
    ids=["once", "twice", "mixed-case"],
)
def test_spoofed_subject_with_valid_token_is_replaced(envoy, oidc, spoofed):
    token = oidc.token()
    seen = upstream_headers(envoy.request("/", headers=[*spoofed, bearer(token)]))
    # Exactly one value, ours: on Envoy >= 1.37 a header without explicit
    # OVERWRITE_IF_EXISTS_OR_ADD would be appended beside the client's value.
    assert seen.get("x-auth-subject") == ["e2e-client"]


@pytest.mark.parametrize(
    "spoofed",
    [
        [("x-auth-subject", "mallory")],
        [("x-auth-subject", "mallory"), ("x-auth-subject", "mallory")],
    ],
    ids=["once", "twice"],
)
def test_spoofed_subject_without_token_never_reaches_upstream(envoy, spoofed):
    resp = envoy.request("/", headers=spoofed)
    assert resp.status == 401, f"{resp.status}: {resp.body!r}"
    assert b"mallory" not in resp.body  # the echo upstream would have echoed it


def test_spoofed_subject_with_bad_token_never_reaches_upstream(envoy):
    resp = envoy.request("/", headers=[("x-auth-subject", "mallory"), bearer("not-a-token")])
    assert resp.status == 401, f"{resp.status}: {resp.body!r}"
    assert b"mallory" not in resp.body


def test_other_client_headers_under_prefix_are_removed(envoy, oidc):
    token = oidc.token()
    seen = upstream_headers(
        envoy.request(
            "/",
            headers=[
                ("x-auth-role", "admin"),
                ("x-auth-role", "root"),
                ("X-Auth-Email", "mallory@example.com"),
                ("x-not-auth", "kept"),
                bearer(token),
            ],
        )
    )
    assert "x-auth-role" not in seen
    assert "x-auth-email" not in seen
    assert seen.get("x-not-auth") == ["kept"]  # only the prefix is stripped
    assert sorted(h for h in seen if h.startswith("x-auth-")) == [
        "x-auth-issuer", "x-auth-provider", "x-auth-scopes", "x-auth-subject",
    ]


# ---------------------------------------------------------------------------------------------
# denied requests: RFC 6750 challenges


def test_no_token_is_401_bearer_challenge_without_error(envoy):
    resp = envoy.request("/things")
    assert resp.status == 401, f"{resp.status}: {resp.body!r}"
    challenge = resp.header("www-authenticate")
    assert challenge is not None, resp.headers
    assert challenge.startswith("Bearer realm="), challenge
    assert f'realm="{REALM}"' in challenge, challenge
    assert "error=" not in challenge, challenge
    assert "error" in resp.json()


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = b64url_json(payload)
    claims["sub"] = "mallory"
    return ".".join([header, b64url(json.dumps(claims).encode()), signature])


def _alg_none(token: str) -> str:
    _, payload, _ = token.split(".")
    return ".".join([b64url(b'{"alg":"none","typ":"at+jwt"}'), payload, ""])


@pytest.mark.parametrize(
    "make_bad",
    [lambda t: "garbage", lambda t: "a.b.c", _tampered, _alg_none],
    ids=["garbage", "three-garbage-segments", "tampered-payload", "alg-none"],
)
def test_bad_token_is_401_invalid_token(envoy, oidc, make_bad):
    bad = make_bad(oidc.token())
    resp = envoy.request("/things", headers=[bearer(bad)])
    assert resp.status == 401, f"{resp.status}: {resp.body!r}"
    challenge = resp.header("www-authenticate")
    assert challenge is not None, resp.headers
    assert challenge.startswith("Bearer realm="), challenge
    assert 'error="invalid_token"' in challenge, challenge
    assert resp.json().get("error") == "invalid_token"


# ---------------------------------------------------------------------------------------------
# fail closed


def test_portcullis_down_fails_closed(logdir, oidc, echo, envoy_version):
    """A private portcullis + Envoy pair: allowed first, then portcullis is killed."""
    pc = start_portcullis(logdir, oidc, f"failclosed-{envoy_version}")
    try:
        env = start_envoy(logdir, envoy_version, pc, echo, "failclosed")
        try:
            token = oidc.token()
            before = env.request("/", headers=[bearer(token)])
            assert before.status == 200, f"precondition: {before.status} {before.body!r}"

            pc.proc.kill()  # SIGKILL: a crash, no draining
            assert not pc.proc.alive()

            settings = ext_authz_config(env)
            assert settings.get("failure_mode_allow") is False
            expected = STATUS_CODES[settings.get("status_on_error", {}).get("code", "Forbidden")]
            for headers in ([bearer(token)], [], [bearer(token), ("x-auth-subject", "mallory")]):
                resp = env.request("/", headers=headers)
                assert resp.status != 200, f"fail OPEN: {resp.body!r}"
                assert resp.status == expected, f"{resp.status}: {resp.body!r}"
                assert b"x-auth-subject" not in resp.body  # not the echo upstream
        finally:
            env.proc.stop()
    finally:
        pc.proc.stop()


# ---------------------------------------------------------------------------------------------
# TODO(later issue): tests to add here, NOT written yet on purpose (no skipped placeholders):
#   * 403 insufficient_scope when a route requires a scope the token lacks
#     (token via oidc.token(scope="read:data"); WWW-Authenticate error="insufficient_scope").
#   * permissive mode (requests without a token pass through without identity headers).
#   * context_extensions routing: /admin carries check_settings.context_extensions {route: admin}
#     in deploy/envoy/envoy.yaml; check that portcullis applies the per-route policy.
#   * opaque tokens via introspection: oidc-provider issues opaque tokens for resource
#     https://opaque.portcullis.test/ (client e2e-introspector may call /token/introspection).
