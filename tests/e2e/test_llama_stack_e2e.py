"""llama-stack drop-in through real Envoy: a llama-stack run configuration whose `oauth2_token` provider
introspects, converted by `portcullis import llama-stack`, served, and checked with JWT access tokens that
oidc-provider issues and a Keycloak-style endpoint introspects (`accept_jwt`), with llama-stack's 401 body.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from conftest import (
    INTROSPECTOR,
    INTROSPECTOR_SECRET_ENV,
    PORTCULLIS_BIN,
    RESOURCE,
    serve_portcullis,
    start_envoy,
)
from test_envoy_e2e import bearer, upstream_headers


def llama_denial(resp) -> str:
    """The message of llama-stack's 401 body (never the echo upstream's body)."""
    assert resp.status == 401, f"expected 401, got {resp.status}: {resp.body!r}"
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message"}, body
    return body["error"]["message"]


@pytest.fixture
def llama_stack_envoy(logdir, oidc, echo, envoy_version):
    run = logdir / f"llama-stack-run-{envoy_version}.yaml"
    run.write_text(yaml.safe_dump({
        "version": 2,
        "image_name": "e2e",
        "server": {
            "port": 8321,
            "auth": {
                "provider_config": {
                    "type": "oauth2_token",
                    "introspection": {
                        "url": f"{oidc.issuer}/introspect-jwt",
                        "client_id": INTROSPECTOR[0],
                        "client_secret": "${env.%s}" % INTROSPECTOR_SECRET_ENV,
                    },
                },
            },
        },
    }, sort_keys=False))
    out = subprocess.run(
        [str(PORTCULLIS_BIN), "import", "llama-stack", str(run)],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, f"import exited {out.returncode}: {out.stderr}"
    config = yaml.safe_load(out.stdout)
    assert config["answers"] == {"body": "llama_stack"}
    assert config["providers"][0]["accept_jwt"] is True
    pc = serve_portcullis(logdir, config, f"llama-stack-{envoy_version}")
    try:
        env = start_envoy(logdir, envoy_version, pc, echo, "llama-stack")
        try:
            yield env
        finally:
            env.proc.stop()
    finally:
        pc.proc.stop()


def test_llama_stack_converted_config_introspects_jwt_access_tokens(llama_stack_envoy, oidc):
    env = llama_stack_envoy
    token = oidc.token("e2e-client", scope="read:data", resource=RESOURCE)
    assert token.count(".") == 2, "oidc-provider issues a JWT access token for this resource"
    seen = upstream_headers(env.request("/v1/models", headers=[bearer(token)]))
    assert seen.get("x-auth-subject") == ["e2e-client"]
    assert seen.get("x-auth-provider") == ["oauth2"]
    assert seen.get("x-auth-roles") == ["e2e-client"]  # llama-stack's default claims_mapping: sub -> roles

    host = oidc.issuer.removeprefix("http://")
    expected = f"Authentication required. Please provide a valid OAuth2 Bearer token validated by {host}"
    assert llama_denial(env.request("/v1/models")) == expected
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[::-1]}"
    assert llama_denial(env.request("/v1/models", headers=[bearer(forged)])) == expected
