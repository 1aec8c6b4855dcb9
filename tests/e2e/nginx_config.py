#!/usr/bin/env python3
"""Adapt deploy/nginx for a test run: change ONLY ports.

deploy/nginx/nginx.conf (the main file) and deploy/nginx/portcullis.conf (the server it includes)
stay the single source of truth. This module copies both into a directory, rewriting the listener,
the portcullis upstream and the application upstream of portcullis.conf to 127.0.0.1:<given port>;
each must occur exactly once, so a restructured config cannot silently escape the test.

CLI (for trying things by hand):
    nginx_config.py DIR --listen-port 18080 --portcullis-port 19192 --upstream-port 18000
    nginx -p DIR -c DIR/nginx.conf -e stderr
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NGINX_DIR = REPO / "deploy" / "nginx"
MAIN = NGINX_DIR / "nginx.conf"
SITE = NGINX_DIR / "portcullis.conf"

# (what the committed file says, what it becomes)
LISTEN = "listen 127.0.0.1:8080;"
PORTCULLIS = "server 127.0.0.1:9192;"
UPSTREAM = "server 127.0.0.1:8000;"


def _replace_once(text: str, old: str, new: str) -> str:
    count = text.count(old)
    if count != 1:
        raise ValueError(f"expected `{old}` exactly once in {SITE}, found it {count} times")
    return text.replace(old, new)


def adapt(site: str, *, listen_port: int, portcullis_port: int, upstream_port: int) -> str:
    """Return portcullis.conf with only its ports changed."""
    site = _replace_once(site, LISTEN, f"listen 127.0.0.1:{listen_port};")
    site = _replace_once(site, PORTCULLIS, f"server 127.0.0.1:{portcullis_port};")
    return _replace_once(site, UPSTREAM, f"server 127.0.0.1:{upstream_port};")


def write(directory: Path, *, listen_port: int, portcullis_port: int, upstream_port: int) -> Path:
    """Write nginx.conf (unchanged) and the adapted portcullis.conf into `directory`; return nginx.conf."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MAIN, directory / "nginx.conf")
    (directory / "portcullis.conf").write_text(
        adapt(
            SITE.read_text(),
            listen_port=listen_port,
            portcullis_port=portcullis_port,
            upstream_port=upstream_port,
        )
    )
    return directory / "nginx.conf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--portcullis-port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    print(
        write(
            args.directory,
            listen_port=args.listen_port,
            portcullis_port=args.portcullis_port,
            upstream_port=args.upstream_port,
        )
    )


if __name__ == "__main__":
    main()
