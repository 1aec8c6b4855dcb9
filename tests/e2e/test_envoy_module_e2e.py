"""portcullis inside Envoy (issue 23): the portcullis-envoy dynamic module in the real Envoy 1.40.

The same portcullis configuration (a JWT provider with a local key set made for this run, a scope
route) is served two ways: by `portcullis serve` behind Envoy's ext_authz (deploy/envoy/envoy.yaml),
and by the module inside Envoy (deploy/envoy/envoy-module.yaml). Every request is sent through both,
and the answers must be the same: status, challenge, body (without its per-decision id), and the
identity headers the upstream receives.

Environment (scripts/test-e2e.sh sets both):
  PORTCULLIS_ENVOY_MODULE_DIR        directory holding libportcullis_envoy.so
  PORTCULLIS_ENVOY_PANIC_MODULE_DIR  the same module built with `--features test-panic`
"""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import envoy_config
from conftest import (
    PROVIDER_NAME,
    REPO,
    RESOURCE,
    Echo,
    Proc,
    Response,
    envoy_binary,
    free_port,
    http_request,
    serve_portcullis,
    start_envoy,
)

MODULE_YAML = REPO / "deploy" / "envoy" / "envoy-module.yaml"
MODULE_ENVOY = "1.40.0"  # the ABI this build is written against
OLD_ENVOY = "1.36.4"  # an Envoy with another ABI: must refuse the module
ISSUER = "https://issuer.module.e2e"
AUDIENCE = "https://api.module.e2e/"
KID = "module-e2e"


def module_dir(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        pytest.fail(f"{var} is not set: run scripts/test-e2e.sh (it builds the module)")
    path = Path(value)
    if not (path / "libportcullis_envoy.so").is_file():
        pytest.fail(f"{path}/libportcullis_envoy.so missing: run scripts/test-e2e.sh")
    return path


# --------------------------------------------------------------------------------------------
# keys and tokens, made for this run


class Keys:
    def __init__(self, directory: Path):
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        public.update(kid=KID, alg="RS256", use="sig")
        self.jwks_file = directory / "module-e2e-jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [public]}))
        # Another key under the same kid: what a forger without our key can sign with.
        self.forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def token(self, *, lifetime: int = 300, key=None, **claims) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "iat": now,
            "nbf": now - 5,
            "exp": now + lifetime,
            "scope": "read:data",
            **claims,
        }
        signer = self.pem if key is None else key
        return jwt.encode(body, signer, algorithm="RS256", headers={"kid": KID})


def portcullis_config(keys: Keys) -> dict:
    return {
        "realm": "portcullis",
        "providers": [
            {
                "name": "local",
                "type": "jwt",
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "algorithms": ["RS256"],
                "jwks_file": str(keys.jwks_file),
            }
        ],
        "routes": [
            {
                "name": "write",
                "match": {"path_prefix": "/write"},
                "require": {"scopes": {"all_of": ["write:data"]}},
            }
        ],
    }


# --------------------------------------------------------------------------------------------
# Envoy with the module


class ModuleEnvoy:
    def __init__(self, proc: Proc, port: int, admin_port: int):
        self.proc, self.port, self.admin_port = proc, port, admin_port

    def request(self, path: str = "/", **kw) -> Response:
        return http_request(self.port, path, **kw)


def module_envoy_config(config_file: Path, listen_port: int, admin_port: int, upstream_port: int) -> dict:
    """deploy/envoy/envoy-module.yaml with only its ports and the filter's config_file changed."""
    doc = envoy_config.load(MODULE_YAML)
    doc["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin_port)
    (listener,) = [l for l in doc["static_resources"]["listeners"] if l["name"] == "ingress"]
    listener["address"]["socket_address"].update(address="127.0.0.1", port_value=listen_port)
    (upstream,) = [c for c in doc["static_resources"]["clusters"] if c["name"] == "upstream"]
    for group in upstream["load_assignment"]["endpoints"]:
        for lb in group["lb_endpoints"]:
            lb["endpoint"]["address"]["socket_address"].update(address="127.0.0.1", port_value=upstream_port)
    (portcullis,) = [f for f in envoy_config.http_filters(doc) if f["name"] == "portcullis"]
    portcullis["typed_config"]["filter_config"]["value"] = json.dumps({"config_file": str(config_file)})
    return doc


def launch_module_envoy(
    logdir: Path, tag: str, config: dict, echo: Echo, *, version: str = MODULE_ENVOY,
    module: str = "PORTCULLIS_ENVOY_MODULE_DIR", edit=None,
) -> tuple[Proc, int, int]:
    """Starts Envoy with the module and `config` (a portcullis configuration); does not wait.
    `edit`, if given, changes the Envoy config document first."""
    config_file = logdir / f"portcullis-module-{tag}.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port, admin_port = free_port(), free_port()
    envoy_file = logdir / f"envoy-module-{version}-{tag}.yaml"
    doc = module_envoy_config(config_file, port, admin_port, echo.port)
    if edit is not None:
        edit(doc)
    envoy_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = Proc(
        f"envoy-module-{version}[{tag}]",
        [envoy_binary(version), "-c", envoy_file, "--disable-hot-restart", "--concurrency", "1", "-l", "info"],
        logdir / f"envoy-module-{version}-{tag}.log",
        env={"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(module_dir(module))},
    ).start()
    return proc, port, admin_port


def per_route(value: dict) -> dict:
    """A route's `typed_per_filter_config` for the portcullis filter."""
    return {
        "portcullis": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute",
            "dynamic_module_config": {"name": "portcullis_envoy"},
            "per_route_config_name": "portcullis",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(value)},
        }
    }


def with_routes(routes: list[dict]):
    """An Envoy config edit: `routes` (Envoy routes to the upstream) before the catch-all route."""

    def edit(doc: dict) -> None:
        (listener,) = [l for l in doc["static_resources"]["listeners"] if l["name"] == "ingress"]
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        vhost = hcm["route_config"]["virtual_hosts"][0]
        vhost["routes"] = routes + vhost["routes"]

    return edit


def start_module_envoy(logdir: Path, tag: str, config: dict, echo: Echo, **kw) -> ModuleEnvoy:
    proc, port, admin_port = launch_module_envoy(logdir, tag, config, echo, **kw)
    try:
        proc.wait_until(
            "LIVE (/ready)",
            lambda: http_request(admin_port, "/ready", timeout=2).body.strip() == b"LIVE",
        )
    except BaseException:
        proc.stop()
        raise
    return ModuleEnvoy(proc, port, admin_port)


def exit_of(proc: Proc, timeout: float = 30.0) -> int:
    """Waits for a process that must refuse to start; its exit code."""
    try:
        return proc.popen.wait(timeout=timeout)
    finally:
        proc.stop()


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def keys(logdir) -> Keys:
    return Keys(logdir)


@pytest.fixture(scope="module")
def both(logdir, keys, echo):
    """(ext_authz Envoy in front of `portcullis serve`, Envoy with the module), same configuration."""
    config = portcullis_config(keys)
    server = serve_portcullis(logdir, config, "module-diff")
    ext_authz = start_envoy(logdir, MODULE_ENVOY, server, echo, "module-diff")
    module = start_module_envoy(logdir, "diff", config, echo)
    yield ext_authz, module
    module.proc.stop()
    ext_authz.proc.stop()
    server.proc.stop()


# --------------------------------------------------------------------------------------------
# the differential: the same answers through both


def upstream_identity(resp: Response) -> dict[str, list[str]]:
    """The `x-auth-*` headers the upstream received (the echo's body)."""
    seen = resp.json()["headers"]
    return {k: v for k, v in seen.items() if k.startswith("x-auth-") and "decision" not in k}


def comparable(resp: Response) -> tuple:
    """What must be equal between the two paths: status, challenge, body without its decision id;
    on an allow, the identity the upstream received."""
    if resp.status == 200:
        return (200, upstream_identity(resp))
    try:
        body = resp.json()
        body.pop("decision_id", None)
    except ValueError:
        body = resp.body
    return (resp.status, resp.header_values("www-authenticate"), body)


def cases(keys: Keys) -> list[tuple[str, str, list[tuple[str, str]]]]:
    bearer = lambda token: [("authorization", f"Bearer {token}")]  # noqa: E731
    valid = keys.token()
    header, payload, signature = valid.split(".")
    return [
        ("valid", "/data", bearer(valid)),
        ("valid with spoofed identity", "/data",
         bearer(valid) + [("x-auth-subject", "mallory"), ("x-auth-role", "admin")]),
        ("missing", "/data", []),
        ("missing with spoofed identity", "/data", [("x-auth-subject", "mallory")]),
        ("forged signature", "/data", bearer(keys.token(key=keys.forger))),
        ("tampered payload", "/data",
         bearer(".".join([header, jwt.utils.base64url_encode(
             json.dumps({**jwt.decode(valid, options={"verify_signature": False}), "sub": "admin"}).encode()
         ).decode(), signature]))),
        ("expired", "/data", bearer(keys.token(lifetime=-120))),
        ("wrong audience", "/data", bearer(keys.token(aud="https://other.example/"))),
        ("wrong issuer", "/data", bearer(keys.token(iss="https://evil.example"))),
        ("alg none", "/data",
         bearer(jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode() + "." + payload + ".")),
        ("garbage", "/data", bearer("not-a-jwt")),
        ("missing scope", "/write/x", bearer(valid)),
        ("scope present", "/write/x", bearer(keys.token(scope="read:data write:data"))),
    ]


def test_module_answers_as_the_grpc_server_does(both, keys):
    ext_authz, module = both
    for name, path, headers in cases(keys):
        via_grpc = comparable(ext_authz.request(path, headers=headers))
        via_module = comparable(module.request(path, headers=headers))
        assert via_module == via_grpc, f"{name}: module {via_module!r} != ext_authz {via_grpc!r}"


def test_module_allows_a_valid_token_with_its_principal_and_drops_spoofed_headers(both, keys):
    _, module = both
    resp = module.request(
        "/data",
        headers=[
            ("authorization", f"Bearer {keys.token()}"),
            ("x-auth-subject", "mallory"),
            ("x-auth-role", "admin"),
        ],
    )
    assert resp.status == 200, resp.body
    seen = resp.json()["headers"]
    assert seen["x-auth-subject"] == ["alice"]
    assert "x-auth-role" not in seen


def test_module_denies_attacks_with_a_challenge(both, keys):
    _, module = both
    for name, path, headers in cases(keys):
        if name in ("valid", "valid with spoofed identity", "scope present"):
            continue
        resp = module.request(path, headers=headers)
        assert resp.status in (401, 403), f"{name}: {resp.status} {resp.body!r}"
        assert resp.header("www-authenticate", ).startswith("Bearer "), f"{name}: {resp.headers}"
        assert b'"headers"' not in resp.body, f"{name}: reached the upstream"


def decisions(envoy: ModuleEnvoy) -> dict[str, float]:
    """Envoy's `portcullis_decisions` counters (the module's stats), by their label set."""
    text = http_request(envoy.admin_port, "/stats/prometheus").body.decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("envoy_dynamicmodulescustom_portcullis_decisions{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split("{", 1)[1].rstrip("}")] = float(value)
    return counts


def test_module_counts_decisions_in_envoys_stats(both, keys):
    _, module = both
    allow = 'decision="allow",reason="",route="default"'
    missing = 'decision="deny",reason="missing_credential",route="default"'
    scope = 'decision="deny",reason="missing_scope",route="write"'
    before = decisions(module)
    assert module.request("/data", headers=[("authorization", f"Bearer {keys.token()}")]).status == 200
    assert module.request("/data").status == 401
    assert module.request("/write/x", headers=[("authorization", f"Bearer {keys.token()}")]).status == 403
    after = decisions(module)
    for labels in (allow, missing, scope):
        assert after.get(labels, 0) - before.get(labels, 0) == 1, f"{labels}: {before} -> {after}"
    # The time to decide, a histogram by decision (Envoy flushes histograms to the admin endpoint
    # periodically, so only its presence is asserted, never a value).
    text = http_request(module.admin_port, "/stats/prometheus").body.decode()
    assert "# TYPE envoy_dynamicmodulescustom_portcullis_check_duration_us histogram" in text, text[-2000:]


def decision_lines(envoy: ModuleEnvoy) -> list[dict]:
    """The decision log lines in Envoy's log (one JSON object each)."""
    found = []
    for line in envoy.proc.log_path.read_text(errors="replace").splitlines():
        start = line.find('{"level":"INFO"')
        if start >= 0 and '"target":"portcullis::decision"' in line:
            found.append(json.loads(line[start:]))
    return found


def test_module_writes_the_decision_log_to_envoys_log(both, keys):
    _, module = both
    denials = lambda: [  # noqa: E731
        l for l in decision_lines(module)
        if l["authz.reason"] == "missing_scope" and l["authz.route"] == "write"
    ]
    before = len(denials())
    assert module.request("/write/x", headers=[("authorization", f"Bearer {keys.token()}")]).status == 403
    deadline = time.monotonic() + 30
    while len(denials()) == before:
        assert time.monotonic() < deadline, "no decision line in Envoy's log"
        time.sleep(0.2)
    line = denials()[-1]
    assert line["authz.decision"] == "deny" and line["principal"] == "alice", line
    assert keys.token()[:20] not in module.proc.log_path.read_text(errors="replace"), "a token in the log"


def test_module_fetches_a_key_set_by_discovery_and_decides_inline(logdir, oidc, echo):
    """A jwt provider with only an issuer: the module's background thread finds the key set through
    OIDC discovery; once loaded, tokens are decided inline on the worker. Before it is loaded a
    request is 503 (cannot decide), never an allow."""
    config = {
        "providers": [
            {
                "name": PROVIDER_NAME,
                "type": "jwt",
                "issuer": oidc.issuer,
                "audiences": [RESOURCE],
                "algorithms": ["RS256"],
            }
        ],
    }
    envoy = start_module_envoy(logdir, "discovery", config, echo)
    try:
        token = [("authorization", f"Bearer {oidc.token()}")]
        deadline = time.monotonic() + 30
        resp = envoy.request("/data", headers=token)
        while resp.status == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
            resp = envoy.request("/data", headers=token)
        assert resp.status == 200, resp.body
        assert resp.json()["headers"]["x-auth-subject"] == ["e2e-client"]
        denied = envoy.request("/data", headers=[("authorization", f"Bearer {oidc.token()}x")])
        assert denied.status == 401, denied.body
    finally:
        envoy.proc.stop()


# --------------------------------------------------------------------------------------------
# paused decisions: a request that needs an upstream call waits for it off Envoy's worker


class FakeUpstream:
    """A loopback identity upstream, run in this process: a key set at /jwks.json (replaceable) and a
    webhook at /check in llama-stack's format. The webhook's answer depends on the token:
    `good-NAME` → 200 with principal NAME; `slow-NAME` → the same after `slow_seconds`; `fail-…` →
    500; anything else → 401. `answered` counts the webhook answers sent."""

    def __init__(self, jwks: dict):
        self.jwks = jwks
        self.slow_seconds = 0.0
        self.answered: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/jwks.json":
                    self.reply(200, fake.jwks)
                else:
                    self.reply(404, {})

            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                token = json.loads(self.rfile.read(length) or b"{}").get("api_key", "")
                kind, _, name = token.partition("-")
                if kind == "slow":
                    time.sleep(fake.slow_seconds)
                if kind in ("good", "slow"):
                    self.reply(200, {"principal": name, "attributes": {"roles": ["reader"]}})
                elif kind == "fail":
                    self.reply(500, {})
                else:
                    self.reply(401, {})
                fake.answered.append(token)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def public_jwk(private, kid: str) -> dict:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    public.update(kid=kid, alg="RS256", use="sig")
    return public


def upstream_config(fake: FakeUpstream, webhook_port: int | None = None) -> dict:
    """A jwt provider whose key set is fetched from `fake`, and a webhook provider (at `fake`, or at
    `webhook_port` where nothing listens)."""
    endpoint = fake.url("/check") if webhook_port is None else f"http://127.0.0.1:{webhook_port}/check"
    return {
        "realm": "portcullis",
        "providers": [
            {
                "name": "remote",
                "type": "jwt",
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "algorithms": ["RS256"],
                "jwks_uri": fake.url("/jwks.json"),
            },
            {
                "name": "hook",
                "type": "webhook",
                "endpoint": endpoint,
                "upstream": {"timeout_seconds": 5},
            },
        ],
        "routes": [
            {
                "name": "write",
                "match": {"path_prefix": "/write"},
                "require": {"scopes": {"all_of": ["write:data"]}},
            }
        ],
    }


@pytest.fixture(scope="module")
def fake(keys):
    fake = FakeUpstream({"keys": [public_jwk(keys.private, KID)]})
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def both_upstream(logdir, fake, echo):
    """(ext_authz → `portcullis serve`, the module), both deciding with `upstream_config(fake)`."""
    config = upstream_config(fake)
    server = serve_portcullis(logdir, config, "module-upstream")
    ext_authz = start_envoy(logdir, MODULE_ENVOY, server, echo, "module-upstream")
    module = start_module_envoy(logdir, "upstream", config, echo)
    yield ext_authz, module
    module.proc.stop()
    ext_authz.proc.stop()
    server.proc.stop()


def wait_for_keys(envoy: ModuleEnvoy, keys: Keys) -> None:
    """Until the module's background thread has loaded the key set (before that: 503)."""
    deadline = time.monotonic() + 30
    token = [("authorization", f"Bearer {keys.token()}")]
    while envoy.request("/data", headers=token).status != 200:
        assert time.monotonic() < deadline, "the key set was not loaded within 30 s"
        time.sleep(0.2)


def test_paused_decisions_answer_as_the_grpc_server_does(both_upstream, keys):
    """Webhook calls (allowed, rejected, the webhook failing) pause the request in the module; the
    answers are the server's."""
    ext_authz, module = both_upstream
    wait_for_keys(module, keys)
    bearer = lambda token: [("authorization", f"Bearer {token}")]  # noqa: E731
    requests = [
        ("webhook allows", "/data", bearer("good-carol")),
        ("webhook allows, spoofed identity", "/data", bearer("good-dave") + [("x-auth-subject", "mallory")]),
        ("webhook rejects", "/data", bearer("bad-erin")),
        ("webhook fails", "/data", bearer("fail-frank")),
        ("webhook allows, missing scope", "/write/x", bearer("good-grace")),
        ("jwt through the fetched key set", "/data", bearer(keys.token())),
    ]
    for name, path, headers in requests:
        via_grpc = comparable(ext_authz.request(path, headers=headers))
        via_module = comparable(module.request(path, headers=headers))
        assert via_module == via_grpc, f"{name}: module {via_module!r} != ext_authz {via_grpc!r}"
    allowed = module.request("/data", headers=bearer("good-heidi") + [("x-auth-subject", "mallory")])
    assert allowed.status == 200, allowed.body
    assert allowed.json()["headers"]["x-auth-subject"] == ["heidi"]
    assert module.request("/data", headers=bearer("fail-ivan")).status == 503


def test_a_paused_post_body_reaches_the_upstream_only_once_decided(both_upstream):
    _, module = both_upstream
    body = b'{"payload": "' + b"x" * 20000 + b'"}'
    allowed = module.request("/data", method="POST", headers=[("authorization", "Bearer good-judy")], body=body)
    assert allowed.status == 200, allowed.body[:500]
    denied = module.request("/data", method="POST", headers=[("authorization", "Bearer bad-judy")], body=body)
    assert denied.status == 401, denied.body[:500]
    assert b'"headers"' not in denied.body, "a rejected POST reached the upstream"


def test_an_unknown_kid_pauses_for_a_key_set_refresh_and_is_then_allowed(logdir, keys, echo):
    """The IdP adds a key after the module has loaded its key set: the first token signed with it
    pauses while the key set is fetched again, and is allowed."""
    fake = FakeUpstream({"keys": [public_jwk(keys.private, KID)]})
    envoy = start_module_envoy(logdir, "unknown-kid", upstream_config(fake), echo)
    try:
        wait_for_keys(envoy, keys)
        rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        fake.jwks = {"keys": [public_jwk(keys.private, KID), public_jwk(rotated, "rotated")]}
        now = int(time.time())
        token = jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "rotated-user", "iat": now, "exp": now + 300},
            rotated, algorithm="RS256", headers={"kid": "rotated"},
        )
        resp = envoy.request("/data", headers=[("authorization", f"Bearer {token}")])
        assert resp.status == 200, resp.body
        assert resp.json()["headers"]["x-auth-subject"] == ["rotated-user"]
    finally:
        envoy.proc.stop()
        fake.stop()


def test_an_unreachable_upstream_is_a_503_as_the_server_answers(logdir, keys, echo):
    fake = FakeUpstream({"keys": [public_jwk(keys.private, KID)]})
    config = upstream_config(fake, webhook_port=free_port())
    server = serve_portcullis(logdir, config, "module-unreachable")
    ext_authz = start_envoy(logdir, MODULE_ENVOY, server, echo, "module-unreachable")
    module = start_module_envoy(logdir, "unreachable", config, echo)
    try:
        headers = [("authorization", "Bearer good-kate")]
        via_module = module.request("/data", headers=headers)
        assert via_module.status == 503, via_module.body
        assert comparable(via_module) == comparable(ext_authz.request("/data", headers=headers))
    finally:
        module.proc.stop()
        ext_authz.proc.stop()
        server.proc.stop()
        fake.stop()


def test_a_client_gone_before_a_slow_answer_leaves_envoy_serving(logdir, keys, echo):
    """The stream ends while its decision waits: the answer, when it comes, is dropped (no write to
    a destroyed stream), and Envoy goes on serving."""
    fake = FakeUpstream({"keys": [public_jwk(keys.private, KID)]})
    fake.slow_seconds = 3.0
    envoy = start_module_envoy(logdir, "client-gone", upstream_config(fake), echo)
    try:
        for n in range(3):
            with pytest.raises(OSError):  # the client gives up (a timeout) and closes
                envoy.request("/data", headers=[("authorization", f"Bearer slow-gone{n}")], timeout=0.5)
        deadline = time.monotonic() + 30
        while len([t for t in fake.answered if t.startswith("slow-gone")]) < 3:
            assert time.monotonic() < deadline, f"the slow webhook did not answer: {fake.answered}"
            time.sleep(0.2)
        time.sleep(0.5)  # let the dropped answers reach the worker, if anything were to
        assert envoy.proc.alive(), envoy.proc.log_tail()
        resp = envoy.request("/data", headers=[("authorization", "Bearer good-leo")])
        assert resp.status == 200, resp.body
        assert resp.json()["headers"]["x-auth-subject"] == ["leo"]
    finally:
        envoy.proc.stop()
        fake.stop()


def with_request_timeout(seconds: int):
    """An Envoy config edit: the connection manager's `request_timeout` (it runs while a filter holds
    the request; a route's `timeout` starts only once the request goes upstream)."""

    def edit(doc: dict) -> None:
        (listener,) = [l for l in doc["static_resources"]["listeners"] if l["name"] == "ingress"]
        listener["filter_chains"][0]["filters"][0]["typed_config"]["request_timeout"] = f"{seconds}s"

    return edit


def test_envoys_request_timeout_while_paused_wins_and_the_late_answer_is_dropped(logdir, keys, echo):
    """Envoy's request timeout (1 s) fires while the decision waits for a 3 s webhook: the client gets
    Envoy's 504 "request timeout", the request never goes upstream, and the late answer is not written over it."""
    fake = FakeUpstream({"keys": [public_jwk(keys.private, KID)]})
    fake.slow_seconds = 3.0
    envoy = start_module_envoy(logdir, "request-timeout", upstream_config(fake), echo, edit=with_request_timeout(1))
    try:
        resp = envoy.request("/timed-out/x", headers=[("authorization", "Bearer slow-mike")], timeout=20)
        assert (resp.status, resp.body) == (504, b"request timeout"), resp.body
        assert b'"headers"' not in resp.body
        deadline = time.monotonic() + 30
        while "slow-mike" not in fake.answered:
            assert time.monotonic() < deadline, f"the slow webhook did not answer: {fake.answered}"
            time.sleep(0.2)
        time.sleep(0.5)  # let the dropped answer reach the worker, if anything were to
        assert not echo.saw("/timed-out/x"), "a request whose pause timed out reached the upstream"
        assert envoy.proc.alive(), envoy.proc.log_tail()
        ok = envoy.request("/data", headers=[("authorization", "Bearer good-nina")])
        assert ok.status == 200, ok.body
    finally:
        envoy.proc.stop()
        fake.stop()


# --------------------------------------------------------------------------------------------
# per-route config


def test_a_per_route_config_picks_the_portcullis_route_or_switches_the_filter_off(logdir, keys, echo):
    """Two Envoy routes with a per-route config: /reports is decided on portcullis's `write` route
    (whose `match` is /write only), /public has the filter off."""
    edit = with_routes([
        {"match": {"prefix": "/reports"}, "route": {"cluster": "upstream"},
         "typed_per_filter_config": per_route({"route": "write"})},
        {"match": {"prefix": "/public"}, "route": {"cluster": "upstream"},
         "typed_per_filter_config": per_route({"disabled": True})},
    ])
    envoy = start_module_envoy(logdir, "per-route", portcullis_config(keys), echo, edit=edit)
    try:
        read = [("authorization", f"Bearer {keys.token()}")]
        write = [("authorization", f"Bearer {keys.token(scope='read:data write:data')}")]
        # The catch-all Envoy route: portcullis's route matching (default route: any valid token).
        assert envoy.request("/data", headers=read).status == 200
        # /reports: decided on `write`, which needs write:data.
        denied = envoy.request("/reports/q1", headers=read)
        assert denied.status == 403, denied.body
        allowed = envoy.request("/reports/q1", headers=write)
        assert allowed.status == 200, allowed.body
        assert allowed.json()["headers"]["x-auth-subject"] == ["alice"]
        # /public: no decision at all; the client's headers pass as sent.
        public = envoy.request("/public/x", headers=[("x-auth-subject", "anyone")])
        assert public.status == 200, public.body
        assert public.json()["headers"]["x-auth-subject"] == ["anyone"]
    finally:
        envoy.proc.stop()


def test_a_per_route_config_naming_an_unknown_route_denies_with_500(logdir, keys, echo):
    edit = with_routes([
        {"match": {"prefix": "/reports"}, "route": {"cluster": "upstream"},
         "typed_per_filter_config": per_route({"route": "no-such-route"})},
    ])
    envoy = start_module_envoy(logdir, "per-route-unknown", portcullis_config(keys), echo, edit=edit)
    try:
        resp = envoy.request("/reports/q1", headers=[("authorization", f"Bearer {keys.token()}")])
        assert resp.status == 500, resp.body
        assert b'"headers"' not in resp.body
        log = envoy.proc.log_path.read_text(errors="replace")
        assert "no-such-route" in log, log[-2000:]
    finally:
        envoy.proc.stop()


def test_a_malformed_per_route_config_is_refused_with_our_message(logdir, keys, echo):
    edit = with_routes([
        {"match": {"prefix": "/reports"}, "route": {"cluster": "upstream"},
         "typed_per_filter_config": per_route({"route": "write", "disabled": True})},
    ])
    proc, _, _ = launch_module_envoy(logdir, "per-route-bad", portcullis_config(keys), echo, edit=edit)
    code = exit_of(proc)
    log = proc.log_path.read_text(errors="replace")
    assert code != 0, log[-3000:]
    assert "portcullis: the per-route config is refused" in log, log[-3000:]


# --------------------------------------------------------------------------------------------
# config_file reload


def write_settled(path: Path, config: dict) -> None:
    """Writes a portcullis config the way a careful writer does (a temporary file renamed over the
    old one), dated past the module's quiet period so the change is taken at the next poll."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    past = time.time() - 60
    os.utime(tmp, (past, past))
    tmp.replace(path)


def test_a_changed_config_file_is_reloaded_and_a_broken_one_leaves_the_old_serving(logdir, keys, echo):
    config = portcullis_config(keys)
    envoy = start_module_envoy(logdir, "reload", config, echo)
    config_file = logdir / "portcullis-module-reload.yaml"
    try:
        read = [("authorization", f"Bearer {keys.token()}")]
        assert envoy.request("/write/x", headers=read).status == 403
        # The `write` route no longer needs write:data (a narrower path takes the requirement).
        changed = json.loads(json.dumps(config))
        changed["routes"][0]["match"] = {"path_prefix": "/write/admin"}
        write_settled(config_file, changed)
        deadline = time.monotonic() + 30
        while envoy.request("/write/x", headers=read).status != 200:
            assert time.monotonic() < deadline, "the changed config_file was not reloaded"
            time.sleep(0.2)
        assert envoy.request("/write/admin/x", headers=read).status == 403

        # A broken file: refused with our message in Envoy's log, the reloaded config still serving.
        tmp = config_file.with_suffix(".tmp")
        tmp.write_text("providers: [{name: local, type: jwt\n")
        past = time.time() - 60
        os.utime(tmp, (past, past))
        tmp.replace(config_file)
        deadline = time.monotonic() + 30
        while "is refused; the running configuration stays in force" not in envoy.proc.log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, "the broken config_file was not refused in the log"
            time.sleep(0.2)
        assert envoy.request("/write/x", headers=read).status == 200
        assert envoy.request("/write/admin/x", headers=read).status == 403
        assert envoy.request("/data").status == 401
    finally:
        envoy.proc.stop()


# --------------------------------------------------------------------------------------------
# refusals and failures


def test_a_config_with_an_error_is_refused_with_our_message(logdir, keys, echo):
    config = portcullis_config(keys)
    config["providers"][0]["algorithms"] = ["RS256", "XX999"]
    proc, _, _ = launch_module_envoy(logdir, "invalid", config, echo)
    code = exit_of(proc)
    log = proc.log_path.read_text(errors="replace")
    assert code != 0, log[-3000:]
    assert "portcullis: the filter config is refused" in log, log[-3000:]
    assert "providers[0].algorithms" in log, log[-3000:]


def test_envoy_136_refuses_the_140_build_clearly(logdir, keys, echo):
    proc, _, _ = launch_module_envoy(logdir, "old-envoy", portcullis_config(keys), echo, version=OLD_ENVOY)
    code = exit_of(proc)
    log = proc.log_path.read_text(errors="replace")
    assert code != 0, log[-3000:]
    assert "portcullis-envoy" in log and "Envoy 1.40" in log, log[-3000:]


def test_a_panic_in_the_module_is_a_500_and_envoy_keeps_serving(logdir, keys, echo):
    envoy = start_module_envoy(
        logdir, "panic", portcullis_config(keys), echo, module="PORTCULLIS_ENVOY_PANIC_MODULE_DIR"
    )
    try:
        token = [("authorization", f"Bearer {keys.token()}")]
        for _ in range(3):
            resp = envoy.request("/data", headers=token + [("x-portcullis-test-panic", "1")])
            assert resp.status == 500, resp.body
            assert b'"headers"' not in resp.body, "a panicking check reached the upstream"
        # A panic in a decision that has paused (on the background thread): 500 as well.
        resp = envoy.request("/data", headers=token + [("x-portcullis-test-panic", "after-pause")])
        assert resp.status == 500, resp.body
        assert b'"headers"' not in resp.body, "a panicking paused check reached the upstream"
        assert envoy.proc.alive()
        after = envoy.request("/data", headers=token)
        assert after.status == 200, after.body
        assert after.json()["headers"]["x-auth-subject"] == ["alice"]
    finally:
        envoy.proc.stop()
