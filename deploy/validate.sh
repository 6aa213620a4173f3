#!/usr/bin/env bash
# Renders every way of installing seam (kustomize base and injection overlay,
# the Helm chart with several value sets) and validates each rendered
# manifest offline:
#   1. against the Kubernetes OpenAPI schemas with kubernetes-validate
#      --strict (unknown fields are errors), for each version in
#      KUBE_VERSIONS (default: 1.30.0 1.35.0);
#   2. with tools/check_manifests.py: RBAC, capabilities, host mounts,
#      probes, arguments as deploy/README.md documents, and the Helm render
#      equal to the kustomize one where it must be.
# Fails (exit 1) on the first missing tool and after any failed check.
#
# Needs (see deploy/README.md, "Validating offline"):
#   kubectl with built-in kustomize (or a kustomize binary)
#   python3 -m pip install kubernetes-validate==1.37.0 helm-python-sdk==0.2.2
# A helm binary, when on PATH, renders the chart; otherwise
# tools/helm_template.py renders it with Helm's Go SDK (helm-python-sdk).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
versions="${KUBE_VERSIONS:-1.30.0 1.35.0}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

die() {
    echo "validate.sh: $*" >&2
    exit 1
}

# --- tools -------------------------------------------------------------------
if command -v kustomize >/dev/null 2>&1; then
    kustomize_build() { kustomize build "$1"; }
    kz_tool="kustomize $(kustomize version 2>/dev/null | head -n1)"
elif command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
    kustomize_build() { kubectl kustomize "$1"; }
    kz_tool="kubectl kustomize ($(kubectl version --client 2>/dev/null | grep -i kustomize || echo 'version unknown'))"
else
    die "no kustomize: install kubectl (it embeds kustomize v5) or a kustomize binary. \
Debian's kubernetes-client (kubectl 1.20) is too old: its kustomize v2 lacks 'labels' and 'patches'."
fi
command -v kubernetes-validate >/dev/null 2>&1 ||
    die "no kubernetes-validate: python3 -m pip install kubernetes-validate==1.37.0"
python3 -c 'import yaml' 2>/dev/null ||
    die "no PyYAML: python3 -m pip install pyyaml"
if command -v helm >/dev/null 2>&1; then
    helm_template() { # release namespace values...
        local release="$1" namespace="$2"
        shift 2
        local args=()
        for v in "$@"; do args+=(-f "$v"); done
        helm template "$release" "$here/helm/seam" --namespace "$namespace" "${args[@]}"
    }
    helm_tool="helm $(helm version --short 2>/dev/null)"
else
    python3 -c 'import helm_python' 2>/dev/null ||
        die "no helm binary and no helm-python-sdk: python3 -m pip install helm-python-sdk==0.2.2"
    helm_template() {
        python3 "$here/tools/helm_template.py" "$here/helm/seam" "$@"
    }
    helm_tool="Helm $(python3 -c 'import helm_python as h; print(h.helm_sdk_version())') Go SDK via helm-python-sdk"
fi
echo "kustomize: $kz_tool"
echo "helm:      $helm_tool"
echo "schemas:   kubernetes-validate $(kubernetes-validate --version 2>&1 | tail -n1), Kubernetes $versions"

# --- render --------------------------------------------------------------------
kustomize_build "$here/kubernetes" >"$out/kustomize-base.yaml"
kustomize_build "$here/kubernetes/overlays/injection" >"$out/kustomize-injection.yaml"

cat >"$out/values-injection.yaml" <<'EOF'
injection:
  enabled: true
kubernetes:
  labelKey: example.com/observe
  labelSelector: "tier in (web,api),!canary"
otlp:
  endpoint: http://collector.monitoring:4318
  protocol: http/protobuf
image:
  repository: registry.example.com/seam
  tag: "0.1.0-test"
nodeSelector:
  kubernetes.io/os: linux
priorityClassName: system-node-critical
extraEnv:
  - name: OTEL_RESOURCE_ATTRIBUTES
    value: deployment.environment.name=test
extraArgs: ["--ring-buffer-mib=32"]
podAnnotations:
  example.com/team: observability
securityContext:
  extraCapabilities: []
EOF
cat >"$out/values-privileged.yaml" <<'EOF'
securityContext:
  privileged: true
serviceAccount:
  annotations:
    example.com/owner: platform
EOF
cat >"$out/values-bad.yaml" <<'EOF'
otlp:
  protocol: udp
EOF
helm_template seam seam-system >"$out/helm-default.yaml"
helm_template seam seam-system "$out/values-injection.yaml" >"$out/helm-injection.yaml"
helm_template seam seam-system "$out/values-privileged.yaml" >"$out/helm-privileged.yaml"
if helm_template seam seam-system "$out/values-bad.yaml" >/dev/null 2>&1; then
    die "the chart accepted otlp.protocol=udp: values.schema.json is not applied"
fi

# --- validate ------------------------------------------------------------------
fail=0
# The validator must be able to fail: a DaemonSet with a misspelt field.
cat >"$out/broken.yaml" <<'EOF'
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: broken}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      hostPid: true
      containers: [{name: c, image: x}]
EOF
if kubernetes-validate --strict --quiet -k "${versions%% *}" "$out/broken.yaml" >/dev/null 2>&1; then
    die "kubernetes-validate passed a manifest with an unknown field; it validates nothing"
fi

renders=(kustomize-base kustomize-injection helm-default helm-injection helm-privileged)
for v in $versions; do
    for r in "${renders[@]}"; do
        if kubernetes-validate --strict --quiet -k "$v" "$out/$r.yaml"; then
            echo "ok   $r: valid for Kubernetes $v ($(grep -c '^kind:' "$out/$r.yaml") objects)"
        else
            echo "FAIL $r: not valid for Kubernetes $v" >&2
            fail=1
        fi
    done
done

check() { python3 "$here/tools/check_manifests.py" "$@" || fail=1; }
check "$out/kustomize-base.yaml" --compare "$out/helm-default.yaml"
check "$out/kustomize-injection.yaml" --injection
check "$out/helm-injection.yaml" --injection --label-key example.com/observe
check "$out/helm-privileged.yaml" --privileged
check "$out/helm-default.yaml"
grep -q 'kind: Namespace' "$out/kustomize-base.yaml" ||
    { echo "FAIL kustomize-base: no Namespace" >&2; fail=1; }
grep -q 'pod-security.kubernetes.io/enforce: privileged' "$out/kustomize-base.yaml" ||
    { echo "FAIL kustomize-base: namespace does not allow privileged pods" >&2; fail=1; }

if [ "$fail" -ne 0 ]; then
    echo "validate.sh: FAILED" >&2
    exit 1
fi
echo "validate.sh: all manifests valid"
