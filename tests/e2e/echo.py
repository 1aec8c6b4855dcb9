#!/usr/bin/env python3
"""Upstream echo server for the portcullis end-to-end suite.

Answers every request (any method, any path) with 200 and a JSON body:

    {"method": "GET", "path": "/x?y=1",
     "headers": {"x-auth-subject": ["alice"], "host": ["..."], ...},
     "raw_headers": [["x-auth-subject", "alice"], ...]}

`headers` maps each lower-cased header name to ALL its values in the order received (one entry
per header line, so duplicates are visible); `raw_headers` keeps the exact order and spelling.

Usage: echo.py --port 8000 [--host 127.0.0.1]. Prints `READY http://host:port` when listening.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "portcullis-e2e-echo"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers: dict[str, list[str]] = {}
        raw: list[list[str]] = []
        for name, value in self.headers.raw_items():
            headers.setdefault(name.lower(), []).append(value)
            raw.append([name, value])
        payload = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": headers,
                "raw_headers": raw,
                "body_length": len(body),
            },
            indent=1,
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer

    def log_message(self, fmt: str, *args) -> None:  # one line per request on stderr
        sys.stderr.write("echo: %s %s\n" % (self.address_string(), fmt % args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), EchoHandler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"READY http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
