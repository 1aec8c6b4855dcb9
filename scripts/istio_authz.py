#!/usr/bin/env python3
"""A small evaluator of Istio AuthorizationPolicy `to.operation` matching, to test which requests
the shipped CUSTOM policies actually send to portcullis.

Istio's rules, as implemented here (istio.io, "Authorization Policy" reference):
  - A CUSTOM policy sends a request to its provider when ANY of its rules matches. A rule matches
    when every one of its `from`/`to`/`when` parts matches; only `to` is modelled (a rule with
    `from` or `when` is refused, so a policy cannot silently be judged on half its conditions).
    A rule `{}` matches every request; a policy without `rules` matches none.
  - `to` is a list of operations: it matches when ANY operation matches. An operation matches
    when ALL the fields it sets match: `hosts` (any of them), `notHosts` (none of them), `paths`,
    `notPaths`, `methods`, `notMethods`, `ports`, `notPorts`.
  - A value is an exact string, a prefix match `abc*`, a suffix match `*abc`, or `*` (presence:
    any non-empty value).
  - Hosts are matched against the Host / :authority header AS SENT (port included), and
    case-insensitively. Paths are case-sensitive and matched without the query string.
    Methods are case-sensitive.

CLI (used by scripts/test-deploy.sh):
  istio_authz.py selftest                       # the matcher's own rules
  istio_authz.py covers POLICY.yaml NAME        # the shipped gateway policy checks what it must
  istio_authz.py old-policy-bypassed            # negative control: the previous policy shape
Exit 0 when the assertions hold, 1 (with the failing cases) otherwise.
"""

from __future__ import annotations

import sys

import yaml

OPERATION_FIELDS = {"hosts", "notHosts", "paths", "notPaths", "methods", "notMethods", "ports", "notPorts"}


def value_matches(pattern: str, value: str, *, case_insensitive: bool = False) -> bool:
    if case_insensitive:
        pattern, value = pattern.lower(), value.lower()
    if pattern == "*":
        return value != ""
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def any_matches(patterns, value, **kw) -> bool:
    return any(value_matches(str(p), value, **kw) for p in patterns)


def request_port(host: str, scheme: str = "https") -> str:
    if host.startswith("["):  # [v6]:port
        rest = host.split("]", 1)[1]
        return rest[1:] if rest.startswith(":") else ("443" if scheme == "https" else "80")
    if ":" in host:
        return host.rsplit(":", 1)[1]
    return "443" if scheme == "https" else "80"


def operation_matches(op: dict, req: dict) -> bool:
    unknown = set(op) - OPERATION_FIELDS
    if unknown:
        raise ValueError(f"operation field(s) not modelled: {sorted(unknown)}")
    host, path, method = req["host"], req["path"].split("?", 1)[0], req.get("method", "GET")
    port = str(req.get("port") or request_port(host))
    if "hosts" in op and not any_matches(op["hosts"], host, case_insensitive=True):
        return False
    if "notHosts" in op and any_matches(op["notHosts"], host, case_insensitive=True):
        return False
    if "paths" in op and not any_matches(op["paths"], path):
        return False
    if "notPaths" in op and any_matches(op["notPaths"], path):
        return False
    if "methods" in op and not any_matches(op["methods"], method):
        return False
    if "notMethods" in op and any_matches(op["notMethods"], method):
        return False
    if "ports" in op and port not in [str(p) for p in op["ports"]]:
        return False
    if "notPorts" in op and port in [str(p) for p in op["notPorts"]]:
        return False
    return True


def rule_matches(rule: dict, req: dict) -> bool:
    unknown = set(rule) - {"to"}
    if unknown:
        raise ValueError(f"rule part(s) not modelled: {sorted(unknown)}")
    if "to" not in rule:
        return True  # {} matches everything
    return any(operation_matches(t["operation"], req) for t in rule["to"])


def custom_checks(policy: dict, req: dict) -> bool:
    """True when this CUSTOM policy sends `req` to its provider."""
    spec = policy["spec"]
    assert spec.get("action") == "CUSTOM", f"{policy['metadata']['name']}: not a CUSTOM policy"
    return any(rule_matches(r, req) for r in spec.get("rules") or [])


# ---------------------------------------------------------------------------------------------
# the requests

# Must reach portcullis: the bypasses of the old policy, in every form a client can send them.
MUST_CHECK = [
    ("api.example.com", "/api/orders"),
    ("api.example.com:443", "/api/orders"),  # port form: skipped the old exact host match
    ("api.example.com:8443", "/api/orders"),
    ("API.Example.COM:443", "/api/orders"),
    ("api.example.com", "/api"),  # no trailing slash: missed "/api/*"
    ("api.example.com", "/API/x"),  # case: paths are case-sensitive
    ("api.example.com", "/Api"),
    ("api.example.com:443", "/API/x"),
    ("api.example.com", "/"),
    ("other.example.com", "/api/orders"),  # a host nobody listed is protected too
    ("10.0.0.7:80", "/admin"),
    ("api.example.com", "/HEALTHZ"),  # variants of a public path fail safe: checked
    ("api.example.com", "/healthz/x"),
    ("api.example.com", "/api/public"),  # "/api/public/*" needs the slash
    ("api.example.com", "/API/public/docs"),
    ("www.example.com.evil.test", "/"),
    ("api.example.com", "/wwwhealthz"),
]
# The public exceptions the shipped policy lists: not checked.
MUST_NOT_CHECK = [
    ("api.example.com", "/healthz"),
    ("api.example.com:443", "/healthz"),
    ("api.example.com", "/healthz?probe=1"),
    ("api.example.com", "/api/public/docs"),
    ("www.example.com", "/"),
    ("www.example.com:443", "/pricing"),
    ("WWW.EXAMPLE.COM:8443", "/pricing"),
]
# The old policy's bypasses (negative control): each of these skipped the check.
OLD_BYPASSES = [
    ("api.example.com:443", "/api/orders"),
    ("api.example.com", "/api"),
    ("api.example.com", "/API/x"),
    ("api.example.com", "/Api"),
]

# The previous shape of the gateway policy (deploy/istio/authorization-policy.yaml before the fix),
# kept here as the negative control: the evaluator must find its bypasses.
OLD_POLICY = yaml.safe_load("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: portcullis-ext-authz-api
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  action: CUSTOM
  provider:
    name: portcullis
  rules:
    - to:
        - operation:
            hosts: ["api.example.com"]
            paths: ["/api/*"]
            notPaths: ["/healthz", "/api/public/*"]
""")


def req(host, path):
    return {"host": host, "path": path}


def selftest() -> list[str]:
    bad = []

    def expect(got, want, what):
        if got != want:
            bad.append(f"{what}: got {got}, want {want}")

    expect(value_matches("/api", "/api"), True, "exact")
    expect(value_matches("/api", "/api/"), False, "exact is exact")
    expect(value_matches("/api/*", "/api/x"), True, "prefix")
    expect(value_matches("/api/*", "/api"), False, "prefix needs the prefix")
    expect(value_matches("*.example.com", "a.example.com"), True, "suffix")
    expect(value_matches("*.example.com", "example.com"), False, "suffix needs the suffix")
    expect(value_matches("*", ""), False, "presence needs a value")
    expect(value_matches("*", "x"), True, "presence")
    expect(value_matches("/API", "/api"), False, "paths are case-sensitive")
    expect(value_matches("API.example.com", "api.EXAMPLE.com", case_insensitive=True), True, "hosts ignore case")
    expect(value_matches("api.example.com:*", "API.example.com:443", case_insensitive=True), True, "host:* form")
    expect(value_matches("api.example.com", "api.example.com:443", case_insensitive=True), False,
           "an exact host does not match its port form")
    op = {"notPaths": ["/healthz"]}
    expect(operation_matches(op, req("h", "/healthz?x=1")), False, "query string is not part of the path")
    expect(operation_matches({"ports": ["443"]}, req("h", "/")), True, "default https port")
    expect(operation_matches({"ports": ["8443"]}, req("h:8443", "/")), True, "port from the host")
    pol = {"metadata": {"name": "t"}, "spec": {"action": "CUSTOM"}}
    expect(custom_checks(pol, req("h", "/")), False, "a policy without rules matches nothing")
    pol["spec"]["rules"] = [{}]
    expect(custom_checks(pol, req("h", "/")), True, "an empty rule matches everything")
    try:
        rule_matches({"from": []}, req("h", "/"))
        bad.append("a rule with `from` must be refused, not half-evaluated")
    except ValueError:
        pass
    return bad


def covers(path: str, name: str) -> list[str]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    pols = [d for d in docs if d.get("kind") == "AuthorizationPolicy" and d["metadata"]["name"] == name]
    if len(pols) != 1:
        return [f"{path}: expected one AuthorizationPolicy named {name}, found {len(pols)}"]
    pol = pols[0]
    bad = [f"NOT checked (bypass): Host {h} {p}" for h, p in MUST_CHECK if not custom_checks(pol, req(h, p))]
    bad += [f"checked, but listed as public: Host {h} {p}" for h, p in MUST_NOT_CHECK if custom_checks(pol, req(h, p))]
    return bad


def old_policy_bypassed() -> list[str]:
    bad = [f"old policy: Host {h} {p} was checked; the evaluator no longer sees this bypass"
           for h, p in OLD_BYPASSES if custom_checks(OLD_POLICY, req(h, p))]
    # ... and the evaluator is not simply answering "not checked" to everything:
    if not custom_checks(OLD_POLICY, req("api.example.com", "/api/orders")):
        bad.append("old policy: Host api.example.com /api/orders should have been checked")
    return bad


def main(argv: list[str]) -> int:
    cmd, args = argv[1], argv[2:]
    bad = {"selftest": selftest, "covers": covers, "old-policy-bypassed": old_policy_bypassed}[cmd](*args)
    for line in bad:
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
