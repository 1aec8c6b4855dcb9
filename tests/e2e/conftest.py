"""Harness of the real-Envoy end-to-end suite: processes, ports, logs, fixtures.

Every process runs on 127.0.0.1 with a free port, logs to a per-session temp dir, is waited for
with a bounded deadline and is always stopped (SIGTERM, then SIGKILL) by its own pid. When a test
fails, the tail of every live process log is attached to the pytest report.

Environment:
  PORTCULLIS_BIN       portcullis binary (default: <repo>/target/debug/portcullis)
  E2E_ENVOY_VERSIONS   space-separated Envoy versions (default: "1.40.0 1.36.4"); each must be
                       installed in <repo>/.tools/envoy-<version> (scripts/test-e2e.sh does it)
  NODE                 node binary (default: node)
  E2E_KEEP_LOGS        keep the log dir after the session (path is printed)
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

import envoy_config

REPO = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent
TOOLS = REPO / ".tools"
ENVOY_VERSIONS = os.environ.get("E2E_ENVOY_VERSIONS", "1.40.0 1.36.4").split()
PORTCULLIS_BIN = Path(os.environ.get("PORTCULLIS_BIN", REPO / "target" / "debug" / "portcullis"))
NODE = os.environ.get("NODE", "node")

# Test fixtures of tests/e2e/oidc/server.mjs.
RESOURCE = "https://api.portcullis.test/"  # JWT access tokens
OPAQUE_RESOURCE = "https://opaque.portcullis.test/"  # opaque access tokens (introspection)
CLIENTS = {
    "e2e-client": ("e2e-client-secret", "basic"),
    "e2e-client-post": ("e2e-client-post-secret", "post"),
}
# The resource server portcullis introspects as (client_secret_basic at oidc-provider).
INTROSPECTOR = ("e2e-introspector", "e2e-introspector-secret")
INTROSPECTOR_SECRET_ENV = "E2E_INTROSPECTOR_SECRET"  # how portcullis gets the secret ({env: ...})
PROVIDER_NAME = "oidc-e2e"  # type: jwt
INTROSPECTION_PROVIDER_NAME = "oidc-e2e-introspection"  # type: introspection
REALM = "portcullis"
# The signed identity token portcullis sets for the upstream (identity_token).
IDENTITY_ISSUER = "https://portcullis.e2e"
IDENTITY_AUDIENCE = "echo-upstream"
IDENTITY_HEADER = "x-auth-identity"

# The per-route policy of the generated portcullis config (top-level keys). The default route (every
# other path) has no requirement beyond authentication.
POLICY = {
    "routes": [
        # Envoy's `/admin` route sends check_settings.context_extensions {route: admin}
        # (deploy/envoy/envoy.yaml); this route matches on that ONLY, never on the path.
        {
            "name": "admin",
            "match": {"context_extensions": {"route": "admin"}},
            "require": {"scopes": {"all_of": ["admin:data"]}},
        },
        # A CEL expression over the request and the identity.
        {
            "name": "team",
            "match": {"path_prefix": "/team"},
            "require": {"expression": "request.headers['x-team'] == 'blue' && 'read:data' in identity.scopes"},
        },
        {
            "name": "write",
            "match": {"path_prefix": "/write"},
            "require": {"scopes": {"all_of": ["write:data"]}},
        },
        # Permissive: what fails goes upstream anyway, marked with x-auth-would-deny.
        {
            "name": "preview",
            "match": {"path_prefix": "/preview"},
            "mode": "permissive",
            "require": {"scopes": {"all_of": ["nobody:has-this"]}},
        },
    ],
}

START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
LOG_TAIL_LINES = 150

_LIVE: list["Proc"] = []  # every process not yet stopped, for logs on failure and final cleanup


# --------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Proc:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> "Proc":
        self._log = open(self.log_path, "ab")
        self._log.write(f"$ {' '.join(map(str, self.argv))}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            [str(a) for a in self.argv],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(self.env or {})},
            cwd=self.cwd,
            start_new_session=True,  # a terminal ^C reaches pytest only; we stop children ourselves
        )
        _LIVE.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, what: str, check, timeout: float = START_TIMEOUT) -> None:
        """Poll `check()` until it returns truthy; fail (with the log) on timeout or exit."""
        deadline = time.monotonic() + timeout
        last_exc: Exception | None = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode} before {what}\n"
                    f"--- {self.log_path} ---\n{self.log_tail()}"
                )
            try:
                if check():
                    return
            except Exception as exc:  # noqa: BLE001 - polling: keep the last error for the message
                last_exc = exc
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.name} not {what} after {timeout}s (last error: {last_exc!r})\n"
            f"--- {self.log_path} ---\n{self.log_tail()}"
        )

    def kill(self) -> None:
        """SIGKILL now (simulates a crash)."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self._reap(STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM, bounded wait, then SIGKILL."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.send_signal(signal.SIGKILL)
        self._reap(STOP_TIMEOUT)

    def _reap(self, timeout: float) -> None:
        if self.popen is not None:
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        if self in _LIVE:
            _LIVE.remove(self)
        if getattr(self, "_log", None) and not self._log.closed:
            self._log.close()


# --------------------------------------------------------------------------------------------
# HTTP (http.client: no proxies from the environment, exact control over header lines)


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)


def http_request(
    port: int,
    path: str = "/",
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] = (),
    body: bytes | None = None,
    timeout: float = 10.0,
) -> Response:
    """One request on a fresh connection; `headers` is a list so a name may repeat."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return Response(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# report: attach process logs to failures


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for proc in list(_LIVE):
            report.sections.append((f"log of {proc.name} ({proc.log_path})", proc.log_tail()))


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def logdir():
    path = Path(tempfile.mkdtemp(prefix="portcullis-e2e-"))
    yield path
    for proc in list(_LIVE):  # safety net: nothing outlives the session
        proc.stop()
    if os.environ.get("E2E_KEEP_LOGS"):
        print(f"\ne2e logs kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Oidc:
    proc: Proc
    port: int

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(
        self,
        client_id: str = "e2e-client",
        *,
        scope: str = "read:data write:data",
        resource: str | None = RESOURCE,
    ) -> str:
        """client_credentials grant; returns the access token."""
        secret, auth = CLIENTS[client_id]
        form = {"grant_type": "client_credentials", "scope": scope}
        if resource:
            form["resource"] = resource
        headers = [("content-type", "application/x-www-form-urlencoded")]
        if auth == "basic":
            basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
            headers.append(("authorization", f"Basic {basic}"))
        else:
            form.update(client_id=client_id, client_secret=secret)
        from urllib.parse import urlencode

        resp = http_request(
            self.port, "/token", method="POST", headers=headers, body=urlencode(form).encode()
        )
        assert resp.status == 200, f"token endpoint: {resp.status} {resp.body!r}"
        return resp.json()["access_token"]


@pytest.fixture(scope="session")
def oidc(logdir) -> Oidc:
    if not (E2E_DIR / "oidc" / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("tests/e2e/oidc/node_modules missing: run scripts/test-e2e.sh (npm ci)")
    port = free_port()
    proc = Proc(
        "oidc-provider",
        [NODE, E2E_DIR / "oidc" / "server.mjs", "--port", str(port)],
        logdir / "oidc-provider.log",
        cwd=E2E_DIR / "oidc",
    ).start()
    try:
        proc.wait_until(
            "serving discovery",
            lambda: http_request(port, "/.well-known/openid-configuration", timeout=2).status == 200,
        )
        yield Oidc(proc, port)
    finally:
        proc.stop()


@dataclass
class Echo:
    proc: Proc
    port: int

    def saw(self, marker: str) -> bool:
        """Whether a request line containing `marker` reached the upstream. The echo server logs each
        request (line-buffered stderr) before its response goes out, so once the client has an answer
        that came through the upstream, its line is already in the log."""
        return marker in self.proc.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def echo(logdir) -> Echo:
    port = free_port()
    proc = Proc(
        "echo", [sys.executable, E2E_DIR / "echo.py", "--port", str(port)], logdir / "echo.log"
    ).start()
    try:
        proc.wait_until("answering", lambda: http_request(port, "/", timeout=2).status == 200)
        yield Echo(proc, port)
    finally:
        proc.stop()


@dataclass
class Portcullis:
    proc: Proc
    grpc_port: int
    admin_port: int
    config_path: Path
    config: dict
    http_port: int | None = None  # server.http_listen, when an http_mode was asked for

    def explain(self, *args: str) -> dict:
        """`portcullis explain --config <this config> ARGS…` (offline, same code path): the JSON."""
        out = subprocess.run(
            [str(PORTCULLIS_BIN), "explain", "--config", str(self.config_path), *args],
            capture_output=True, text=True, timeout=30, env={**os.environ, **PORTCULLIS_ENV},
        )
        assert out.returncode in (0, 3), f"explain exited {out.returncode}: {out.stderr}"
        return json.loads(out.stdout)


# Environment of every portcullis process (secrets are `{env: NAME}` references in its config).
PORTCULLIS_ENV = {INTROSPECTOR_SECRET_ENV: INTROSPECTOR[1]}


def start_portcullis(
    logdir: Path, oidc: Oidc, tag: str, server_extra: dict | None = None, **http
) -> Portcullis:
    """The suite's portcullis; `http_mode=` (and `http_path_prefix=`) also open its HTTP listener;
    `server_extra` (such as `tls`) is added to its `server` section."""
    if not PORTCULLIS_BIN.is_file():
        pytest.fail(f"portcullis binary not found at {PORTCULLIS_BIN} (cargo build --bin portcullis)")
    config = {
        "realm": REALM,
        "providers": [
            {
                "name": PROVIDER_NAME,
                "type": "jwt",
                "issuer": oidc.issuer,
                "audiences": [RESOURCE],
                "algorithms": ["RS256"],
                # no jwks_uri: OIDC discovery at <issuer>/.well-known/openid-configuration
            },
            # After the jwt provider: JWS-shaped tokens go to `jwt`, opaque ones here (RFC 7662).
            {
                "name": INTROSPECTION_PROVIDER_NAME,
                "type": "introspection",
                "endpoint": f"{oidc.issuer}/token/introspection",
                "client_id": INTROSPECTOR[0],
                "client_secret": {"env": INTROSPECTOR_SECRET_ENV},
                "auth_method": "client_secret_basic",
                "audiences": [OPAQUE_RESOURCE],
            },
        ],
        "identity_token": {
            "issuer": IDENTITY_ISSUER,
            "audience": IDENTITY_AUDIENCE,
            "ttl_seconds": 60,
            "state_dir": str(logdir / f"identity-state-{tag}"),
        },
        **POLICY,
    }
    return serve_portcullis(logdir, config, tag, server_extra=server_extra, **http)


def serve_portcullis(
    logdir: Path,
    config: dict,
    tag: str,
    *,
    http_mode: str | None = None,
    http_path_prefix: str | None = None,
    server_extra: dict | None = None,
) -> Portcullis:
    """Serves `config` on free loopback ports (its `server` section is replaced; `server_extra`, such
    as `tls`, is added to it). With `http_mode`, the HTTP forward-auth listener too
    (server.http_listen, http_mode, http_path_prefix)."""
    grpc_port, admin_port = free_port(), free_port()
    server = {
        "listen": f"127.0.0.1:{grpc_port}",
        "admin_listen": f"127.0.0.1:{admin_port}",
        "drain_seconds": 1,
        **(server_extra or {}),
    }
    http_port = None
    if http_mode is not None:
        http_port = free_port()
        server.update(http_listen=f"127.0.0.1:{http_port}", http_mode=http_mode)
        if http_path_prefix is not None:
            server["http_path_prefix"] = http_path_prefix
    config = {**config, "server": server}
    config_path = logdir / f"portcullis-{tag}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = Proc(
        f"portcullis[{tag}]",
        [PORTCULLIS_BIN, "serve", "--config", config_path],
        logdir / f"portcullis-{tag}.log",
        env={
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
            "PORTCULLIS_LOG_FORMAT": "text",
            "NO_COLOR": "1",  # plain log files
            **PORTCULLIS_ENV,
        },
    ).start()
    try:
        proc.wait_until(
            "ready (/readyz 200)", lambda: http_request(admin_port, "/readyz", timeout=2).status == 200
        )
    except BaseException:
        proc.stop()
        raise
    return Portcullis(proc, grpc_port, admin_port, config_path, config, http_port)


@pytest.fixture(scope="session")
def portcullis(logdir, oidc) -> Portcullis:
    pc = start_portcullis(logdir, oidc, "shared")
    yield pc
    pc.proc.stop()


@dataclass
class Envoy:
    proc: Proc
    version: str
    port: int
    admin_port: int
    config: dict

    def request(self, path: str = "/", **kw) -> Response:
        return http_request(self.port, path, **kw)


def envoy_binary(version: str) -> Path:
    path = TOOLS / f"envoy-{version}" / "bin" / "envoy"
    if not path.is_file():
        pytest.fail(f"Envoy {version} not installed at {path}: run scripts/test-e2e.sh")
    return path


def start_envoy(
    logdir: Path,
    version: str,
    portcullis: Portcullis,
    echo: Echo,
    tag: str,
    change: Callable[[dict], None] | None = None,
    *,
    http_service: bool = False,
) -> Envoy:
    """deploy/envoy/envoy.yaml (gRPC) in front of `echo`; with `http_service`, envoy-http.yaml talking
    to portcullis' HTTP listener. `change` may edit the config first (e.g. TLS to the authz cluster)."""
    binary = envoy_binary(version)
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    assert f"/{version}/" in out.stdout, f"{binary} is not Envoy {version}: {out.stdout!r}"
    port, admin_port = free_port(), free_port()
    if http_service:
        assert portcullis.http_port is not None, "portcullis was started without http_mode"
    config = envoy_config.adapt(
        envoy_config.load(envoy_config.ENVOY_HTTP_YAML if http_service else envoy_config.ENVOY_YAML),
        listen_port=port,
        admin_port=admin_port,
        portcullis_port=portcullis.http_port if http_service else portcullis.grpc_port,
        upstream_port=echo.port,
    )
    if change is not None:
        change(config)
    config_path = logdir / f"envoy-{version}-{tag}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = Proc(
        f"envoy-{version}[{tag}]",
        [
            binary, "-c", config_path,
            "--disable-hot-restart", "--concurrency", "1",
            "-l", "info", "--component-log-level", "ext_authz:debug",
        ],
        logdir / f"envoy-{version}-{tag}.log",
    ).start()
    try:
        proc.wait_until(
            "LIVE (/ready)",
            lambda: http_request(admin_port, "/ready", timeout=2).body.strip() == b"LIVE",
        )
    except BaseException:
        proc.stop()
        raise
    return Envoy(proc, version, port, admin_port, config)


@pytest.fixture(scope="session", params=ENVOY_VERSIONS, ids=lambda v: f"envoy-{v}")
def envoy_version(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def envoy(logdir, envoy_version, portcullis, echo) -> Envoy:
    env = start_envoy(logdir, envoy_version, portcullis, echo, "shared")
    yield env
    env.proc.stop()
