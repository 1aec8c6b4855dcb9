#!/usr/bin/env python3
"""Adapt deploy/envoy/envoy.yaml for a test run: change ONLY ports and addresses.

The committed file stays the single source of truth; this module loads it, rewrites the admin
address, the `ingress` listener and the endpoints of the `portcullis` and `upstream` clusters to
127.0.0.1:<given port>, and fails loudly if any of these is missing (so a restructured config
cannot silently escape the test).

CLI (for trying things by hand):
    envoy_config.py --listen-port 18080 --admin-port 19901 --portcullis-port 19001 \
        --upstream-port 18000 [--without-ext-authz] > /tmp/envoy.yaml
`--without-ext-authz` drops the ext_authz filter (manual proxy check only; the suite never uses it).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ENVOY_YAML = REPO / "deploy" / "envoy" / "envoy.yaml"
# The ext_authz `http_service` variant (portcullis' HTTP forward-auth listener, http_mode: envoy).
ENVOY_HTTP_YAML = REPO / "deploy" / "envoy" / "envoy-http.yaml"
EXT_AUTHZ = "envoy.filters.http.ext_authz"


def _set_socket(holder: dict, what: str, host: str, port: int) -> None:
    try:
        sock = holder["address"]["socket_address"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{what}: no address.socket_address in {ENVOY_YAML}") from exc
    sock["address"] = host
    sock["port_value"] = int(port)


def _cluster(doc: dict, name: str) -> dict:
    for cluster in doc["static_resources"]["clusters"]:
        if cluster.get("name") == name:
            return cluster
    raise ValueError(f"cluster {name!r} not found in {ENVOY_YAML}")


def load(path: Path = ENVOY_YAML) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def adapt(
    doc: dict,
    *,
    listen_port: int,
    admin_port: int,
    portcullis_port: int,
    upstream_port: int,
    host: str = "127.0.0.1",
) -> dict:
    """Return a copy of `doc` with only ports/addresses changed."""
    doc = copy.deepcopy(doc)
    _set_socket(doc["admin"], "admin", host, admin_port)

    listeners = [l for l in doc["static_resources"]["listeners"] if l.get("name") == "ingress"]
    if len(listeners) != 1:
        raise ValueError(f"expected exactly one listener named 'ingress' in {ENVOY_YAML}")
    _set_socket(listeners[0], "listener ingress", host, listen_port)

    for name, port in (("portcullis", portcullis_port), ("upstream", upstream_port)):
        endpoints = [
            lb["endpoint"]
            for group in _cluster(doc, name)["load_assignment"]["endpoints"]
            for lb in group["lb_endpoints"]
        ]
        if not endpoints:
            raise ValueError(f"cluster {name!r} has no endpoint in {ENVOY_YAML}")
        for endpoint in endpoints:
            _set_socket(endpoint, f"cluster {name}", host, port)
    return doc


def authz_tls(
    doc: dict,
    *,
    ca_file: str,
    server_name: str,
    client_cert: tuple[str, str] | None = None,
) -> None:
    """Make the `portcullis` cluster use TLS (portcullis' `server.tls`): verify the server against
    `ca_file` and `server_name` (SNI and SAN), and present `client_cert` (certificate, key files) when
    given, for `server.tls.client_ca_file`. The same as the snippet in deploy/envoy/README.md."""
    common: dict = {
        "alpn_protocols": ["h2"],
        "validation_context": {
            "trusted_ca": {"filename": ca_file},
            "match_typed_subject_alt_names": [
                {"san_type": "DNS", "matcher": {"exact": server_name}}
            ],
        },
    }
    if client_cert is not None:
        common["tls_certificates"] = [
            {
                "certificate_chain": {"filename": client_cert[0]},
                "private_key": {"filename": client_cert[1]},
            }
        ]
    _cluster(doc, "portcullis")["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": server_name,
            "common_tls_context": common,
        },
    }


def http_filters(doc: dict) -> list[dict]:
    listener = next(l for l in doc["static_resources"]["listeners"] if l["name"] == "ingress")
    for chain in listener["filter_chains"]:
        for flt in chain["filters"]:
            if flt["name"] == "envoy.filters.network.http_connection_manager":
                return flt["typed_config"]["http_filters"]
    raise ValueError("no http_connection_manager in listener 'ingress'")


def main() -> None:
    parser = argparse.ArgumentParser(description="print deploy/envoy/envoy.yaml with test ports")
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--portcullis-port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--without-ext-authz", action="store_true")
    args = parser.parse_args()
    doc = adapt(
        load(),
        listen_port=args.listen_port,
        admin_port=args.admin_port,
        portcullis_port=args.portcullis_port,
        upstream_port=args.upstream_port,
    )
    if args.without_ext_authz:
        filters = http_filters(doc)
        filters[:] = [f for f in filters if f["name"] != EXT_AUTHZ]
    yaml.safe_dump(doc, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
