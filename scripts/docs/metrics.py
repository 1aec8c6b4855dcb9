"""Writes the book's metrics reference from what running servers expose on /metrics.

Usage: python3 scripts/docs/metrics.py PORTCULLIS_BIN OUT.md

Four servers on free loopback ports, each scraped once:
  - `serve --dev` after one Check (a family with labels appears with its first sample),
  - `serve --config` (adds what only a configuration file brings),
  - `serve --config` with `server.tls` (adds the certificate families),
  - `serve --config` with `state.backend: redis`, against a redis-server this script starts on a free
    loopback port (adds the Redis families).
Each family is listed with the type and help text the server declares, and the run that showed it
first says when it is present. Nothing here is copied by hand from the code.
"""

import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN, OUT = sys.argv[1], Path(sys.argv[2])
ENV = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def scrape(args, workdir, after_start=None):
    """Starts `portcullis serve ARGS`, waits for /metrics, runs after_start, returns the families."""
    grpc, admin = free_ports(2)
    args = [*args, "--listen", f"127.0.0.1:{grpc}", "--admin-listen", f"127.0.0.1:{admin}"]
    log = open(workdir / f"serve-{admin}.log", "w")
    server = subprocess.Popen([BIN, "serve", *args], stdout=log, stderr=log, env=ENV, cwd=workdir)
    url = f"http://127.0.0.1:{admin}/metrics"
    try:
        deadline = time.monotonic() + 120  # a cold debug binary on a busy machine; ends at the first answer
        while True:
            if server.poll() is not None:
                sys.exit(f"metrics.py: `serve {' '.join(args)}` exited:\n{Path(log.name).read_text()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5).read()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    sys.exit(f"metrics.py: {url} did not answer")
                time.sleep(0.2)
        if after_start:
            after_start(grpc)
        return parse(urllib.request.urlopen(url, timeout=10).read().decode())
    finally:
        server.terminate()
        server.wait()


def parse(text):
    families = {}  # name -> {"type", "help", "unit"}, in the order /metrics lists them
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) >= 3 and parts[0] == "#" and parts[1] in ("HELP", "TYPE", "UNIT"):
            families.setdefault(parts[2], {})[parts[1].lower()] = parts[3] if len(parts) > 3 else ""
    return families


def one_check(grpc):
    # A Check without a credential: denied (exit 3), which creates portcullis_checks' first sample.
    rc = subprocess.run([BIN, "check", "--addr", f"http://127.0.0.1:{grpc}"], env=ENV,
                        capture_output=True).returncode
    if rc != 3:
        sys.exit(f"metrics.py: the Check without a credential exited {rc}, not 3 (denied)")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dev = scrape(["--dev", "--state-dir", str(work / "dev")], work, one_check)

        digest = hashlib.sha256(b"docs-reference").hexdigest()
        config = (
            "providers:\n"
            "  - name: keys\n"
            "    type: api_key\n"
            "    credential: {header: x-api-key}\n"
            f"    keys: [{{sha256: 'sha256:{digest}', principal: docs}}]\n"
        )
        (work / "plain.yaml").write_text(config)
        plain = scrape(["--config", str(work / "plain.yaml")], work)

        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(work / "tls.key"),
                        "-out", str(work / "tls.crt")], check=True, capture_output=True)
        tls = config + f"server:\n  tls: {{cert_file: {work / 'tls.crt'}, key_file: {work / 'tls.key'}}}\n"
        (work / "tls.yaml").write_text(tls)
        with_tls = scrape(["--config", str(work / "tls.yaml")], work)

        (redis_port,) = free_ports(1)
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", str(work)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            shared = config + f"state: {{backend: redis, url: 'redis://127.0.0.1:{redis_port}/0'}}\n"
            (work / "redis.yaml").write_text(shared)
            with_redis = scrape(["--config", str(work / "redis.yaml")], work)
        finally:
            redis.terminate()
            redis.wait()

    rows = []
    for families, when in ((dev, "always"), (plain, "`serve --config`"), (with_tls, "with `server.tls`"),
                           (with_redis, "with `state.backend: redis`")):
        for name, fam in families.items():
            if all(name != r[0] for r in rows):
                rows.append((name, fam, when))
    samples = {"counter": "`{}_total`", "info": "`{}_info`", "histogram": "`{0}_bucket`, `{0}_sum`, `{0}_count`"}
    with OUT.open("w") as f:
        f.write("# Metrics\n\n")
        f.write("<!-- Generated by scripts/docs-reference from running servers' /metrics; do not edit. -->\n\n")
        f.write("Every metric family on the admin port's `/metrics` (OpenMetrics text), with the type and\n")
        f.write("help text the server declares and the sample names a query uses. *Present* says when the\n")
        f.write("family is there: always, only for a server started with `--config` (not `--dev`), or only\n")
        f.write("with `server.tls` or with `state.backend: redis`. [Metrics](../operations/metrics.md) explains\n")
        f.write("the labels and what to watch.\n\n")
        f.write("| family | type | samples | present | help |\n| --- | --- | --- | --- | --- |\n")
        for name, fam, when in rows:
            kind = fam.get("type", "")
            sample = samples.get(kind, "`{}`").format(name)
            help_text = fam.get("help", "").replace("|", "\\|")
            f.write(f"| `{name}` | {kind} | {sample} | {when} | {help_text} |\n")


main()
