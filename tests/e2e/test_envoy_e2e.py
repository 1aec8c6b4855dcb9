"""Real-Envoy end-to-end tests: client ─► Envoy (ext_authz) ─► portcullis / echo upstream.

Every test runs once per Envoy version (E2E_ENVOY_VERSIONS, default 1.40.0 and 1.36.4): header
append semantics changed in Envoy 1.37, so identity-header overwrite is checked on both sides.
Tokens come from a real OpenID provider (oidc-provider, tests/e2e/oidc/server.mjs); portcullis
finds its keys by OIDC discovery; opaque tokens go to its introspection endpoint. The per-route
policy under test is conftest.POLICY. Run through scripts/test-e2e.sh.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import uuid

import pytest

from conftest import (
    E2E_DIR,
    NODE,
    RESOURCE,

    IDENTITY_AUDIENCE,
    IDENTITY_HEADER,
    IDENTITY_ISSUER,
    INTROSPECTION_PROVIDER_NAME,
    OPAQUE_RESOURCE,
    PROVIDER_NAME,
    REALM,
    Envoy,
    http_request,
    start_envoy,
    start_portcullis,
)

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


def denial(resp, status: int) -> dict:
    """The JSON body of a portcullis denial (never the echo upstream's body)."""
    assert resp.status == status, f"expected {status}, got {resp.status}: {resp.body!r}"
    body = resp.json()
    assert "headers" not in body, f"the upstream answered: {body!r}"
    return body


DECISION_ID = re.compile(r"[0-9a-f]{24}")


def assert_decision_id(value) -> str:
    assert isinstance(value, str) and DECISION_ID.fullmatch(value), f"bad decision id {value!r}"
    return value


def marker() -> str:
    """A unique query value: tells whether this very request reached the upstream (echo log)."""
    return f"probe={uuid.uuid4().hex}"


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
                ("x-auth-would-deny", "spoofed"),
                ("x-auth-decision-id", "0123456789abcdef01234567"),
                ("x-not-auth", "kept"),
                bearer(token),
            ],
        )
    )
    assert "x-auth-role" not in seen
    assert "x-auth-email" not in seen
    assert "x-auth-would-deny" not in seen  # an enforced allow carries no would-deny mark
    assert seen.get("x-not-auth") == ["kept"]  # only the prefix is stripped
    assert sorted(h for h in seen if h.startswith("x-auth-")) == [
        "x-auth-client-id", "x-auth-decision-id", "x-auth-identity", "x-auth-issuer",
        "x-auth-provider", "x-auth-scopes", "x-auth-subject",
    ]
    (decision_id,) = seen["x-auth-decision-id"]
    assert assert_decision_id(decision_id) != "0123456789abcdef01234567"


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
            # /healthz does not depend on portcullis (ext_authz is off on that route)
            health = env.request("/healthz")
            assert (health.status, health.body) == (200, b"ok\n"), health
        finally:
            env.proc.stop()
    finally:
        pc.proc.stop()


# ---------------------------------------------------------------------------------------------
# per-route policy: scopes, Envoy context_extensions (conftest.POLICY)


def test_admin_route_without_admin_scope_is_403_insufficient_scope(envoy, echo, oidc):
    token = oidc.token(scope="read:data")  # no admin:data
    probe = marker()
    body = denial(envoy.request(f"/admin/reports?{probe}", headers=[bearer(token)]), 403)
    assert body.get("error") == "insufficient_scope", body
    assert not echo.saw(probe), "a denied request reached the upstream"

    resp = envoy.request(f"/admin/reports?{marker()}", headers=[bearer(token)])
    challenge = resp.header("www-authenticate")
    assert challenge is not None, resp.headers
    assert challenge.startswith(f'Bearer realm="{REALM}"'), challenge
    assert 'error="insufficient_scope"' in challenge, challenge
    assert 'scope="admin:data"' in challenge, challenge

    # The same token is fine where no route requires admin:data (default route, no requirement).
    probe = marker()
    seen = upstream_headers(envoy.request(f"/reports?{probe}", headers=[bearer(token)]))
    assert seen.get("x-auth-subject") == ["e2e-client"]
    assert echo.saw(probe), "echo log does not show requests: the not-reached check above is void"


@pytest.mark.parametrize("path", ["//admin/reports", "/x/../admin/reports", "/./admin/reports"])
def test_path_tricks_cannot_bypass_the_admin_policy(envoy, echo, oidc, path):
    """deploy/envoy/envoy.yaml normalises paths before routing and ext_authz: without normalize_path /
    merge_slashes these paths would take Envoy's catch-all route and skip the admin requirement."""
    token = oidc.token(scope="read:data")  # no admin:data
    probe = marker()
    resp = envoy.request(f"{path}?{probe}", headers=[bearer(token)])
    denial(resp, 403)
    assert 'scope="admin:data"' in resp.header("www-authenticate")
    assert not echo.saw(probe), f"{path} reached the upstream"


def test_escaped_slashes_are_refused(envoy, echo, oidc):
    token = oidc.token(scope="read:data")
    probe = marker()
    resp = envoy.request(f"/admin%2Freports?{probe}", headers=[bearer(token)])
    assert resp.status == 400, resp.status
    assert not echo.saw(probe)


@pytest.mark.parametrize("name", ["x_auth_subject", "X_Auth_Scopes", "some_header"])
def test_headers_with_underscores_are_refused(envoy, echo, oidc, name):
    """headers_with_underscores_action: REJECT_REQUEST. portcullis strips client `x-auth-*` headers,
    but upstreams that fold `_` into `-` (CGI/WSGI, nginx underscores_in_headers) would read
    `x_auth_subject` as the identity header: Envoy refuses such requests outright."""
    token = oidc.token()
    probe = marker()
    resp = envoy.request(f"/?{probe}", headers=[bearer(token), (name, "mallory")])
    assert resp.status == 400, f"{resp.status}: {resp.body!r}"
    assert not echo.saw(probe), f"a request with {name} reached the upstream"
    # ... while the dash form of the same header is accepted (and replaced by portcullis' value)
    seen = upstream_headers(envoy.request("/", headers=[bearer(token), ("x-auth-subject", "mallory")]))
    assert seen.get("x-auth-subject") == ["e2e-client"]


def test_healthz_is_answered_by_envoy_without_a_check(envoy, echo):
    """/healthz: ext_authz is disabled on that route only, and Envoy answers it itself, so it needs no
    token and never forwards client headers to the upstream unchecked."""
    probe = marker()
    resp = envoy.request(f"/healthz?{probe}", headers=[("x-auth-subject", "mallory")])
    assert resp.status == 200, f"{resp.status}: {resp.body!r}"
    assert resp.body == b"ok\n"
    assert resp.header("www-authenticate") is None
    assert not echo.saw(probe), "/healthz reached the upstream"
    # only that exact path: everything next to it is still checked
    for path in ("/healthz/x", "/healthzz", "/HEALTHZ"):
        denial(envoy.request(path), 401)


def test_admin_route_with_admin_scope_reaches_upstream(envoy, oidc):
    token = oidc.token(scope="read:data admin:data")
    resp = envoy.request("/admin/reports", headers=[bearer(token)])
    seen = upstream_headers(resp)
    assert resp.json()["path"] == "/admin/reports"
    assert seen.get("x-auth-subject") == ["e2e-client"]
    assert "admin:data" in seen["x-auth-scopes"][0].split()


def test_context_extensions_select_the_route_policy(envoy, portcullis, oidc):
    """The `admin` route matches ONLY on Envoy's context_extensions: the same path without them (offline
    `explain`, or through Envoy on a path its `/admin` route does not take) is the default route."""
    (admin,) = [r for r in portcullis.config["routes"] if r["name"] == "admin"]
    assert set(admin["match"]) == {"context_extensions"}, "the admin route must not match on the path"
    token = oidc.token(scope="read:data")

    # Through Envoy: /admin carries {route: admin} -> the admin route's requirement applies.
    resp = envoy.request("/admin/x", headers=[bearer(token)])
    denial(resp, 403)
    assert 'scope="admin:data"' in resp.header("www-authenticate")

    # Same path, same token, no context extension: portcullis itself takes the default route.
    offline = portcullis.explain("--path", "/admin/x", "--header", f"authorization: Bearer {token}")
    assert offline["decision"] == "allowed", offline
    assert offline["explanation"]["route"]["route"] == "default", offline["explanation"]["route"]
    with_ext = portcullis.explain(
        "--path", "/admin/x", "--header", f"authorization: Bearer {token}",
        "--context-extension", "route=admin",
    )
    assert with_ext["status"] == 403 and with_ext["explanation"]["route"]["route"] == "admin"

    # Through Envoy, paths its /admin prefix route does not take get no context extension.
    for path in ("/x/admin", "/Admin/x"):
        seen = upstream_headers(envoy.request(path, headers=[bearer(token)]))
        assert seen.get("x-auth-subject") == ["e2e-client"], path


def test_path_route_requires_its_scope(envoy, oidc):
    read_only = oidc.token(scope="read:data")
    resp = envoy.request("/write/things", method="POST", headers=[bearer(read_only)], body=b"{}")
    assert denial(resp, 403).get("error") == "insufficient_scope"
    assert 'scope="write:data"' in resp.header("www-authenticate")

    writer = oidc.token(scope="read:data write:data")
    seen = upstream_headers(
        envoy.request("/write/things", method="POST", headers=[bearer(writer)], body=b"{}")
    )
    assert seen.get("x-auth-subject") == ["e2e-client"]


# ---------------------------------------------------------------------------------------------
# permissive mode (route `preview`: requires a scope nobody has)


@pytest.mark.parametrize(
    "spoofed",
    [[], [("x-auth-would-deny", "none")], [("X-Auth-Would-Deny", "none"), ("x-auth-would-deny", "")]],
    ids=["no-spoof", "spoofed-once", "spoofed-twice"],
)
def test_permissive_route_lets_missing_scope_through_marked(envoy, oidc, spoofed):
    token = oidc.token(scope="read:data")
    seen = upstream_headers(envoy.request("/preview/page", headers=[*spoofed, bearer(token)]))
    assert seen.get("x-auth-would-deny") == ["missing_scope"]  # ours only, never the client's
    (decision_id,) = seen.get("x-auth-decision-id", [None])
    assert_decision_id(decision_id)
    assert seen.get("x-auth-subject") == ["e2e-client"]  # the identity still goes upstream


def test_permissive_route_without_token_reaches_upstream_marked(envoy):
    seen = upstream_headers(
        envoy.request(
            "/preview/page",
            headers=[("x-auth-subject", "mallory"), ("x-auth-would-deny", "none")],
        )
    )
    assert seen.get("x-auth-would-deny") == ["missing_credential"]
    assert "x-auth-subject" not in seen
    assert sorted(h for h in seen if h.startswith("x-auth-")) == [
        "x-auth-decision-id", "x-auth-would-deny",
    ]


def test_enforced_route_is_not_permissive(envoy):
    """Control for the two tests above: the same request outside /preview is denied."""
    denial(envoy.request("/page", headers=[("x-auth-would-deny", "none")]), 401)


# ---------------------------------------------------------------------------------------------
# decision ids


def test_denials_carry_a_decision_id(envoy, oidc):
    read_only = oidc.token(scope="read:data")
    ids = []
    for path, headers, status in [
        ("/things", [], 401),  # no credential
        ("/things", [bearer("a.b.c")], 401),  # invalid JWT
        ("/write/x", [bearer(read_only)], 403),  # insufficient scope
    ]:
        body = denial(envoy.request(path, headers=headers), status)
        ids.append(assert_decision_id(body.get("decision_id")))
    assert len(set(ids)) == len(ids), f"decision ids repeat: {ids}"


def test_allowed_request_carries_a_decision_id_upstream(envoy, oidc):
    token = oidc.token()
    ids = []
    for _ in range(2):
        seen = upstream_headers(envoy.request("/things", headers=[bearer(token)]))
        (decision_id,) = seen.get("x-auth-decision-id", [None])
        ids.append(assert_decision_id(decision_id))
    assert ids[0] != ids[1], "one decision id per decision"


# ---------------------------------------------------------------------------------------------
# opaque tokens: the introspection provider (RFC 7662) after the jwt provider


@pytest.mark.parametrize("client_id", ["e2e-client", "e2e-client-post"])
def test_opaque_token_is_accepted_via_introspection(envoy, oidc, client_id):
    token = oidc.token(client_id, scope="read:data", resource=OPAQUE_RESOURCE)
    assert token.count(".") != 2, f"expected an opaque token, got a JWS: {token[:20]}…"
    seen = upstream_headers(envoy.request("/things", headers=[bearer(token)]))
    assert seen.get("x-auth-provider") == [INTROSPECTION_PROVIDER_NAME]
    assert seen.get("x-auth-subject") == [client_id]
    assert seen.get("x-auth-scopes") == ["read:data"]
    assert seen.get("x-auth-issuer") == [oidc.issuer]


def test_opaque_token_meets_route_policy(envoy, oidc):
    read_only = oidc.token(scope="read:data", resource=OPAQUE_RESOURCE)
    resp = envoy.request("/write/x", headers=[bearer(read_only)])
    assert denial(resp, 403).get("error") == "insufficient_scope"
    writer = oidc.token(scope="write:data", resource=OPAQUE_RESOURCE)
    seen = upstream_headers(envoy.request("/write/x", headers=[bearer(writer)]))
    assert seen.get("x-auth-provider") == [INTROSPECTION_PROVIDER_NAME]


@pytest.mark.parametrize(
    "make_token",
    [
        lambda oidc: "Zm9vYmFyYmF6cXV4cXV1eHF1dXpxdXV4cXV1eHF1dXpx",  # unknown to the provider
        lambda oidc: oidc.token(scope="read:data", resource=None),  # active, no audience
    ],
    ids=["unknown", "no-audience"],
)
def test_bad_opaque_token_is_401_invalid_token(envoy, oidc, make_token):
    token = make_token(oidc)
    assert token.count(".") != 2
    resp = envoy.request("/things", headers=[bearer(token)])
    assert denial(resp, 401).get("error") == "invalid_token"
    challenge = resp.header("www-authenticate")
    assert challenge is not None and 'error="invalid_token"' in challenge, resp.headers


def test_jwt_is_still_validated_by_the_jwt_provider(envoy, oidc):
    token = oidc.token(scope="read:data")  # resource https://api.portcullis.test/: a JWT
    assert token.count(".") == 2
    seen = upstream_headers(envoy.request("/things", headers=[bearer(token)]))
    assert seen.get("x-auth-provider") == [PROVIDER_NAME]


# ---------------------------------------------------------------------------------------------
# DPoP (RFC 9449): oidc-provider binds the token to the client's key (cnf.jkt), npm `dpop` makes proofs


def dpop_client(oidc, proofs: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """A DPoP-bound access token from oidc-provider and one proof per (method, url), from
    tests/e2e/oidc/dpop-client.mjs (npm `dpop`)."""
    args = [NODE, str(E2E_DIR / "oidc" / "dpop-client.mjs"), "--issuer", oidc.issuer,
            "--client-id", "e2e-client", "--client-secret", "e2e-client-secret",
            "--resource", RESOURCE, "--scope", "read:data"]
    for method, url in proofs:
        args += ["--proof", f"{method} {url}"]
    out = subprocess.run(args, cwd=E2E_DIR / "oidc", capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"dpop-client: {out.stderr}"
    answer = json.loads(out.stdout)
    assert answer["token_type"] == "DPoP", answer
    claims = b64url_json(answer["access_token"].split(".")[1])
    assert "jkt" in claims.get("cnf", {}), f"the token is not bound: {claims}"
    return answer["access_token"], answer["proofs"]


def test_dpop_bound_token_with_its_proof_is_allowed_and_misuse_denied(envoy, oidc):
    url = f"http://127.0.0.1:{envoy.port}/dpop/things"
    token, (first, for_other_url, for_post) = dpop_client(
        oidc, [("GET", url), ("GET", url + "/other"), ("POST", url)])
    auth = ("authorization", f"DPoP {token}")

    seen = upstream_headers(envoy.request("/dpop/things?x=1", headers=[auth, ("dpop", first)]))
    assert seen.get("x-auth-subject") == ["e2e-client"]

    def refused(resp, error: str):
        body = denial(resp, 401)
        assert body["error"] == error, body
        challenge = resp.header("www-authenticate")
        assert challenge.startswith("DPoP ") and f'error="{error}"' in challenge, challenge

    # The same proof again: a replay.
    refused(envoy.request("/dpop/things", headers=[auth, ("dpop", first)]), "invalid_dpop_proof")
    # A proof made for another URL, and one for another method.
    refused(envoy.request("/dpop/things", headers=[auth, ("dpop", for_other_url)]), "invalid_dpop_proof")
    refused(envoy.request("/dpop/things", headers=[auth, ("dpop", for_post)]), "invalid_dpop_proof")
    # The bound token sent as Bearer (RFC 9449 §7.2), with or without a proof beside it.
    refused(envoy.request("/dpop/things", headers=[bearer(token)]), "invalid_token")
    refused(envoy.request("/dpop/things", headers=[bearer(token), ("dpop", for_post)]), "invalid_token")

# expressions and the signed identity token


def test_expression_route_decides_on_request_and_identity(envoy, oidc):
    token = oidc.token(scope="read:data")
    seen = upstream_headers(envoy.request("/team/x", headers=[bearer(token), ("x-team", "blue")]))
    assert seen.get("x-auth-subject") == ["e2e-client"]
    resp = envoy.request("/team/x", headers=[bearer(token), ("x-team", "red")])
    assert denial(resp, 403)["error"] == "insufficient_scope"
    # No x-team header: the expression fails to evaluate, which denies.
    resp = envoy.request("/team/x", headers=[bearer(token)])
    assert resp.status == 403, f"{resp.status}: {resp.body!r}"


def test_upstream_verifies_the_identity_token(envoy, portcullis, oidc):
    import jwt  # PyJWT, as an upstream service would use it

    token = oidc.token(scope="read:data")
    seen = upstream_headers(
        envoy.request("/things", headers=[bearer(token), (IDENTITY_HEADER, "forged.by.client")])
    )
    (identity,) = seen.get(IDENTITY_HEADER, [None])
    assert identity is not None and identity != "forged.by.client"

    discovery = http_request(portcullis.admin_port, "/.well-known/openid-configuration").json()
    assert discovery["issuer"] == IDENTITY_ISSUER
    jwks_path = discovery["jwks_uri"].split(str(portcullis.admin_port), 1)[1]
    jwks = http_request(portcullis.admin_port, jwks_path).json()
    header = jwt.get_unverified_header(identity)
    assert header["alg"] == "ES256" and header["typ"] == "JWT"
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    claims = jwt.decode(
        identity,
        jwt.PyJWK(jwk).key,
        algorithms=["ES256"],
        audience=IDENTITY_AUDIENCE,
        issuer=IDENTITY_ISSUER,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
    assert claims["sub"] == "e2e-client"
    assert claims["provider"] == PROVIDER_NAME
    assert claims["route"] == "default"
    assert claims["exp"] - claims["iat"] <= 60
    assert_decision_id(claims["decision_id"])

    # A token signed by anyone else does not verify against the published keys.
    forged = identity.rsplit(".", 1)[0] + "." + b64url(b"\x00" * 64)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience=IDENTITY_AUDIENCE)
