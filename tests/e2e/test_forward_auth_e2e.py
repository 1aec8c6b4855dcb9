"""HTTP forward auth through real proxies: client ─► proxy ─► portcullis' HTTP listener / echo upstream.

- nginx (Debian's, with auth_request) runs deploy/nginx/nginx.conf + portcullis.conf, only ports changed;
  portcullis has `http_mode: nginx`.
- Envoy (every E2E_ENVOY_VERSIONS) runs deploy/envoy/envoy-http.yaml (ext_authz `http_service`), only
  ports changed; portcullis has `http_mode: envoy` and `http_path_prefix: /ext-authz`.

Tokens come from oidc-provider; the policy is conftest.POLICY (`/write` needs write:data). Run through
scripts/test-e2e.sh.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

import nginx_config
from conftest import (
    ENVOY_VERSIONS,
    IDENTITY_HEADER,
    PROVIDER_NAME,
    REALM,
    Echo,
    Oidc,
    Portcullis,
    Proc,
    free_port,
    http_request,
    start_envoy,
    start_portcullis,
)

PROXIES = ["nginx", *(f"envoy-{v}" for v in ENVOY_VERSIONS)]
ENVOY_PATH_PREFIX = "/ext-authz"  # deploy/envoy/envoy-http.yaml http_service.path_prefix


@dataclass
class Proxy:
    kind: str  # "nginx" or "envoy"
    proc: Proc
    port: int

    def request(self, path: str = "/", **kw):
        return http_request(self.port, path, **kw)


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None
    )
    if not found:
        pytest.fail("nginx not found: run scripts/test-e2e.sh (it apt-get installs nginx)")
    return found


def start_nginx(logdir: Path, portcullis: Portcullis, echo: Echo, tag: str) -> Proxy:
    assert portcullis.http_port is not None, "portcullis was started without http_mode"
    prefix = logdir / f"nginx-{tag}"
    port = free_port()
    conf = nginx_config.write(
        prefix, listen_port=port, portcullis_port=portcullis.http_port, upstream_port=echo.port
    )
    proc = Proc(
        f"nginx[{tag}]",
        [nginx_binary(), "-p", prefix, "-c", conf, "-e", "stderr"],
        logdir / f"nginx-{tag}.log",
    ).start()
    try:
        # Any HTTP answer means it listens (without a token, the answer is portcullis' 401).
        proc.wait_until("answering", lambda: http_request(port, "/", timeout=2).status > 0)
    except BaseException:
        proc.stop()
        raise
    return Proxy("nginx", proc, port)


def start_proxy(logdir, name: str, portcullis: Portcullis, echo: Echo, tag: str) -> Proxy:
    if name == "nginx":
        return start_nginx(logdir, portcullis, echo, tag)
    env = start_envoy(logdir, name.removeprefix("envoy-"), portcullis, echo, tag, http_service=True)
    return Proxy("envoy", env.proc, env.port)


def start_forward_auth_portcullis(logdir, oidc: Oidc, kind: str, tag: str) -> Portcullis:
    if kind == "nginx":
        return start_portcullis(logdir, oidc, tag, http_mode="nginx")
    return start_portcullis(
        logdir, oidc, tag, http_mode="envoy", http_path_prefix=ENVOY_PATH_PREFIX
    )


@pytest.fixture(scope="session")
def forward_auth_portcullis(logdir, oidc):
    """One portcullis per mode, started on first use."""
    started: dict[str, Portcullis] = {}

    def get(kind: str) -> Portcullis:
        if kind not in started:
            started[kind] = start_forward_auth_portcullis(logdir, oidc, kind, f"http-{kind}")
        return started[kind]

    yield get
    for pc in started.values():
        pc.proc.stop()


@pytest.fixture(scope="session", params=PROXIES)
def proxy(request, logdir, echo, forward_auth_portcullis) -> Proxy:
    kind = "nginx" if request.param == "nginx" else "envoy"
    started = start_proxy(logdir, request.param, forward_auth_portcullis(kind), echo, "forward-auth")
    yield started
    started.proc.stop()


def bearer(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")


def upstream_headers(resp) -> dict[str, list[str]]:
    assert resp.status == 200, f"expected 200 from upstream, got {resp.status}: {resp.body!r}"
    body = resp.json()
    assert "headers" in body, f"not the echo upstream: {body!r}"
    return body["headers"]


# ---------------------------------------------------------------------------------------------
# allowed: our identity headers, never the client's


def test_valid_token_reaches_upstream_with_our_identity_headers_only(proxy, oidc):
    token = oidc.token("e2e-client", scope="read:data write:data")
    resp = proxy.request(
        "/things?x=1",
        headers=[
            ("x-auth-subject", "mallory"),
            ("X-Auth-Subject", "mallory2"),
            # Headers portcullis does not set for this identity: the client's copies go too.
            ("x-auth-actor", "mallory"),
            ("x-auth-would-deny", "spoofed"),
            ("x-auth-decision-id", "0123456789abcdef01234567"),
            bearer(token),
        ],
    )
    seen = upstream_headers(resp)
    assert resp.json()["path"] == "/things?x=1"
    assert seen.get("x-auth-subject") == ["e2e-client"]
    assert seen.get("x-auth-issuer") == [oidc.issuer]
    assert seen.get("x-auth-provider") == [PROVIDER_NAME]
    (scopes,) = seen.get("x-auth-scopes", [None])
    assert scopes is not None and set(scopes.split()) == {"read:data", "write:data"}
    assert "x-auth-actor" not in seen
    assert "x-auth-would-deny" not in seen
    (decision_id,) = seen["x-auth-decision-id"]
    assert decision_id != "0123456789abcdef01234567" and len(decision_id) > 10
    (identity,) = seen[IDENTITY_HEADER]  # the signed identity token travels too
    assert identity.count(".") == 2
    assert "mallory" not in resp.body.decode()
    if proxy.kind == "nginx":
        # The check's location is internal: a client cannot call portcullis through it.
        direct = proxy.request("/_portcullis", headers=[bearer(token)])
        assert direct.status == 404, f"{direct.status}: {direct.body!r}"


def test_underscore_spellings_never_reach_the_upstream(proxy, oidc, echo):
    token = oidc.token()
    marker = f"underscore-{uuid.uuid4().hex}"
    resp = proxy.request(
        f"/things?{marker}",
        headers=[("x_auth_subject", "mallory"), ("X_Auth_Scopes", "admin:data"), bearer(token)],
    )
    if proxy.kind == "envoy":
        # headers_with_underscores_action: REJECT_REQUEST
        assert resp.status == 400, f"{resp.status}: {resp.body!r}"
        assert not echo.saw(marker)
    else:
        # nginx drops them (underscores_in_headers off); the request goes on with ours.
        seen = upstream_headers(resp)
        assert seen.get("x-auth-subject") == ["e2e-client"]
        assert not [h for h in seen if "_" in h], seen
        assert "mallory" not in resp.body.decode()


def test_spoofed_subject_without_token_never_reaches_upstream(proxy, echo):
    marker = f"spoof-{uuid.uuid4().hex}"
    resp = proxy.request(f"/things?{marker}", headers=[("x-auth-subject", "mallory")])
    assert resp.status == 401, f"{resp.status}: {resp.body!r}"
    assert not echo.saw(marker)


# ---------------------------------------------------------------------------------------------
# denied: the challenge reaches the client


def test_no_token_is_401_with_the_challenge(proxy, echo):
    marker = f"none-{uuid.uuid4().hex}"
    resp = proxy.request(f"/things?{marker}")
    assert resp.status == 401, f"{resp.status}: {resp.body!r}"
    challenge = resp.header("www-authenticate")
    assert challenge is not None, resp.headers
    assert challenge.startswith(f'Bearer realm="{REALM}"'), challenge
    assert not echo.saw(marker)
    if proxy.kind == "envoy":  # http_service passes portcullis' body; nginx writes its own page
        assert "error" in resp.json()


def test_bad_token_is_401_invalid_token(proxy):
    resp = proxy.request("/things", headers=[bearer("a.b.c")])
    assert resp.status == 401, f"{resp.status}: {resp.body!r}"
    assert 'error="invalid_token"' in (resp.header("www-authenticate") or ""), resp.headers


def test_insufficient_scope_is_403_with_the_challenge(proxy, oidc, echo):
    token = oidc.token(scope="read:data")  # /write needs write:data (conftest.POLICY)
    marker = f"scope-{uuid.uuid4().hex}"
    resp = proxy.request(f"/write/items?{marker}", method="POST", headers=[bearer(token)], body=b"{}")
    assert resp.status == 403, f"{resp.status}: {resp.body!r}"
    challenge = resp.header("www-authenticate") or ""
    assert 'error="insufficient_scope"' in challenge, resp.headers
    assert "write:data" in challenge, challenge
    assert resp.json()["error"] == "insufficient_scope"
    assert not echo.saw(marker)
    # With the scope, the same request goes through.
    allowed = proxy.request(
        "/write/items", method="POST", headers=[bearer(oidc.token(scope="read:data write:data"))],
        body=b"{}",
    )
    assert upstream_headers(allowed).get("x-auth-subject") == ["e2e-client"]


# ---------------------------------------------------------------------------------------------
# fail closed


@pytest.mark.parametrize("name", PROXIES)
def test_portcullis_down_fails_closed(logdir, oidc, echo, name):
    """A private portcullis + proxy pair: allowed first, then portcullis is killed."""
    kind = "nginx" if name == "nginx" else "envoy"
    pc = start_forward_auth_portcullis(logdir, oidc, kind, f"http-failclosed-{name}")
    try:
        px = start_proxy(logdir, name, pc, echo, "http-failclosed")
        try:
            token = oidc.token()
            before = px.request("/", headers=[bearer(token)])
            assert before.status == 200, f"precondition: {before.status} {before.body!r}"

            pc.proc.kill()  # SIGKILL: a crash, no draining
            assert not pc.proc.alive()

            # nginx: auth_request turns a failed subrequest into 500. Envoy: failure_mode_allow false,
            # status_on_error 503 (deploy/envoy/envoy-http.yaml).
            expected = 500 if kind == "nginx" else 503
            for headers in ([bearer(token)], [], [bearer(token), ("x-auth-subject", "mallory")]):
                marker = f"down-{uuid.uuid4().hex}"
                resp = px.request(f"/?{marker}", headers=headers)
                assert resp.status != 200, f"fail OPEN: {resp.body!r}"
                assert resp.status == expected, f"{resp.status}: {resp.body!r}"
                assert not echo.saw(marker)
        finally:
            px.proc.stop()
    finally:
        pc.proc.stop()
