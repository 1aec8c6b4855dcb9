"""Envoy → portcullis over TLS with client certificates (portcullis `server.tls`), on every Envoy version.

Certificates are made at test time (python `cryptography`): a CA for portcullis' serving certificate
(SAN `localhost`), a CA for the clients portcullis accepts (`client_ca_file`), Envoy's client certificate
from it. The `portcullis` cluster of deploy/envoy/envoy.yaml gets an UpstreamTlsContext
(envoy_config.authz_tls, the snippet of deploy/envoy/README.md): a valid token passes, no token is 401,
and an Envoy without the client certificate cannot use the authz cluster at all: its requests fail
closed with the filter's status_on_error, never reaching the upstream.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import envoy_config
from conftest import PROVIDER_NAME, start_envoy, start_portcullis
from test_envoy_e2e import STATUS_CODES, bearer, ext_authz_config, marker, upstream_headers

SERVER_NAME = "localhost"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @staticmethod
    def new(cn: str) -> "Ca":
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return Ca(key, cert)

    def issue(self, cn: str, *, server: bool) -> tuple[bytes, bytes]:
        """A leaf (server: SAN localhost + 127.0.0.1, serverAuth; else clientAuth): (cert PEM, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pki:
    dir: Path

    def file(self, name: str) -> str:
        return str(self.dir / name)


@pytest.fixture(scope="module")
def pki(logdir) -> Pki:
    d = logdir / "tls-pki"
    d.mkdir(exist_ok=True)
    server_ca, client_ca = Ca.new("portcullis serving CA"), Ca.new("envoy client CA")
    files = {
        "server-ca.pem": server_ca.pem(),
        "client-ca.pem": client_ca.pem(),
    }
    files["tls.crt"], files["tls.key"] = server_ca.issue("portcullis", server=True)
    files["envoy.crt"], files["envoy.key"] = client_ca.issue("envoy", server=False)
    for name, data in files.items():
        (d / name).write_bytes(data)
    return Pki(d)


@pytest.fixture(scope="module")
def tls_portcullis(logdir, oidc, pki):
    pc = start_portcullis(
        logdir,
        oidc,
        "tls",
        server_extra={
            "tls": {
                "cert_file": pki.file("tls.crt"),
                "key_file": pki.file("tls.key"),
                "client_ca_file": pki.file("client-ca.pem"),
            }
        },
    )
    yield pc
    pc.proc.stop()


def _envoy(logdir, version, portcullis, echo, pki, tag, with_cert):
    def change(doc: dict) -> None:
        envoy_config.authz_tls(
            doc,
            ca_file=pki.file("server-ca.pem"),
            server_name=SERVER_NAME,
            client_cert=(pki.file("envoy.crt"), pki.file("envoy.key")) if with_cert else None,
        )

    return start_envoy(logdir, version, portcullis, echo, tag, change)


@pytest.fixture(scope="module")
def mtls_envoy(logdir, envoy_version, tls_portcullis, echo, pki):
    env = _envoy(logdir, envoy_version, tls_portcullis, echo, pki, "mtls", with_cert=True)
    yield env
    env.proc.stop()


def test_valid_token_passes_over_mutual_tls(mtls_envoy, oidc):
    cluster = mtls_envoy.config["static_resources"]["clusters"]
    authz = next(c for c in cluster if c["name"] == "portcullis")
    assert authz["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    token = oidc.token()
    seen = upstream_headers(mtls_envoy.request("/things?x=1", headers=[bearer(token)]))
    assert seen.get("x-auth-subject") == ["e2e-client"]
    assert seen.get("x-auth-provider") == [PROVIDER_NAME]


def test_no_token_is_401_over_mutual_tls(mtls_envoy, echo):
    probe = marker()
    resp = mtls_envoy.request(f"/things?{probe}")
    assert resp.status == 401, f"{resp.status}: {resp.body!r}"
    assert resp.header("www-authenticate").startswith("Bearer realm="), resp.headers
    assert not echo.saw(probe)


def test_envoy_without_the_client_certificate_fails_closed(
    logdir, envoy_version, tls_portcullis, echo, pki, oidc
):
    env = _envoy(logdir, envoy_version, tls_portcullis, echo, pki, "nocert", with_cert=False)
    try:
        settings = ext_authz_config(env)
        assert settings.get("failure_mode_allow") is False
        expected = STATUS_CODES[settings.get("status_on_error", {}).get("code", "Forbidden")]
        token = oidc.token()
        for headers in ([bearer(token)], []):
            probe = marker()
            resp = env.request(f"/things?{probe}", headers=headers)
            assert resp.status != 200, f"fail OPEN: {resp.body!r}"
            assert resp.status == expected, f"{resp.status}: {resp.body!r}"
            assert not echo.saw(probe), "the request reached the upstream"
    finally:
        env.proc.stop()
    # portcullis refused Envoy's handshakes (it said so), rather than Envoy giving up on its own.
    log = tls_portcullis.proc.log_path.read_text(errors="replace")
    assert "TLS handshake failed" in log, tls_portcullis.proc.log_tail()
