#!/usr/bin/env python3
"""Checks what the schemas cannot: that a rendered seam install has the
pieces, privileges and wiring deploy/README.md promises.

usage: check_manifests.py FILE [--injection] [--privileged]
                          [--label-key KEY] [--compare OTHER_FILE]

--compare: OTHER_FILE (e.g. the Helm render) must give the agent container
the same capabilities, host mounts, probes, ports and arguments as FILE (e.g.
the kustomize render).
"""
import argparse
import sys

import yaml

BASE_CAPS = {"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"}
HOST_PATHS = {"/sys/fs/cgroup", "/sys/kernel/tracing", "/sys/kernel/btf"}
RULES = [
    ("", ("namespaces", "pods"), ("list", "watch")),
    ("apps", ("replicasets",), ("get",)),
    ("batch", ("jobs",), ("get",)),
]

errors: list[str] = []


def check(cond: bool, what: str) -> None:
    if not cond:
        errors.append(what)


def load(path: str) -> dict[str, list[dict]]:
    by_kind: dict[str, list[dict]] = {}
    with open(path, encoding="utf-8") as f:
        for doc in yaml.safe_load_all(f):
            if doc:
                by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def one(objs: dict[str, list[dict]], kind: str) -> dict:
    found = objs.get(kind, [])
    if len(found) != 1:
        sys.exit(f"check_manifests: expected one {kind}, found {len(found)}")
    return found[0]


def agent(objs: dict[str, list[dict]]) -> dict:
    ds = one(objs, "DaemonSet")
    containers = ds["spec"]["template"]["spec"]["containers"]
    check(len(containers) == 1, "the DaemonSet has one container")
    return containers[0]


def summary(objs: dict[str, list[dict]]) -> dict:
    """The parts of the agent container that must not differ between renders."""
    c = agent(objs)
    pod = one(objs, "DaemonSet")["spec"]["template"]["spec"]
    sc = c.get("securityContext", {})
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    return {
        "hostPID": pod.get("hostPID"),
        "caps": sorted(sc.get("capabilities", {}).get("add", [])),
        "drop": sc.get("capabilities", {}).get("drop"),
        "privileged": sc.get("privileged"),
        "seccomp": sc.get("seccompProfile"),
        "args": sorted(c.get("args", [])),
        "ports": c.get("ports"),
        "probes": {k: c.get(k) for k in ("startupProbe", "livenessProbe", "readinessProbe")},
        "mounts": sorted(
            (m["mountPath"], vols[m["name"]].get("hostPath", {}).get("path"), m.get("readOnly"))
            for m in c.get("volumeMounts", [])
        ),
        "env": sorted(e["name"] for e in c.get("env", [])),
        "tolerations": pod.get("tolerations"),
        "nodeSelector": pod.get("nodeSelector"),
        "rules": one(objs, "ClusterRole")["rules"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--injection", action="store_true")
    ap.add_argument("--privileged", action="store_true")
    ap.add_argument("--label-key", default="seam.dev/trace")
    ap.add_argument("--compare")
    a = ap.parse_args()
    objs = load(a.file)

    sa = one(objs, "ServiceAccount")
    role = one(objs, "ClusterRole")
    binding = one(objs, "ClusterRoleBinding")
    cm = one(objs, "ConfigMap")
    ds = one(objs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    c = agent(objs)
    ns = ds["metadata"].get("namespace")

    rules = sorted(
        (r["apiGroups"][0], tuple(sorted(r["resources"])), tuple(sorted(r["verbs"])))
        for r in role["rules"]
    )
    check(rules == sorted(RULES), f"ClusterRole rules are exactly {RULES}, not {rules}")
    check(binding["roleRef"]["name"] == role["metadata"]["name"], "binding names the role")
    subj = binding["subjects"][0]
    check(
        (subj["kind"], subj["name"], subj.get("namespace"))
        == ("ServiceAccount", sa["metadata"]["name"], ns),
        "binding names the agent's ServiceAccount in its namespace",
    )
    check(sa["metadata"].get("namespace") == ns, "ServiceAccount and DaemonSet share a namespace")
    check(pod.get("serviceAccountName") == sa["metadata"]["name"], "pod uses the ServiceAccount")
    check(pod.get("hostPID") is True, "hostPID: true")
    check(not pod.get("hostNetwork"), "no hostNetwork")
    check({"operator": "Exists"} in pod.get("tolerations", []), "tolerates every taint")

    sc = c["securityContext"]
    caps = set(sc.get("capabilities", {}).get("add", []))
    if a.privileged:
        check(sc.get("privileged") is True, "privileged fallback is privileged")
    else:
        want = BASE_CAPS | ({"NET_ADMIN"} if a.injection else set())
        check(sc.get("privileged") is False, "not privileged")
        check(caps == want, f"capabilities are exactly {sorted(want)}, not {sorted(caps)}")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], "drops ALL first")
        check(sc.get("allowPrivilegeEscalation") is False, "no privilege escalation")
    check(sc.get("readOnlyRootFilesystem") is True, "read-only root file system")

    args = c.get("args", [])
    check("--config=/etc/seam/config.yaml" in args, "--config points at the ConfigMap file")
    check(f"--k8s-label-key={a.label_key}" in args, f"--k8s-label-key={a.label_key}")
    check(("--inject-traceparent" in args) == a.injection, "--inject-traceparent iff injection")

    env = {e["name"]: e for e in c.get("env", [])}
    check(
        env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        == "spec.nodeName",
        "NODE_NAME from the downward API",
    )
    check("OTEL_EXPORTER_OTLP_ENDPOINT" in env, "OTEL_EXPORTER_OTLP_ENDPOINT is set")

    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    check(ports.get("metrics") == 9464, "port 9464 named metrics")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") == "metrics", f"{probe} GET {path} on metrics")

    vols = {v["name"]: v for v in pod.get("volumes", [])}
    host = {}
    for m in c.get("volumeMounts", []):
        v = vols.get(m["name"])
        check(v is not None, f"volume {m['name']} exists")
        if v and "hostPath" in v:
            host[v["hostPath"]["path"]] = m
            check(m.get("readOnly") is True, f"{m['mountPath']} is mounted read-only")
        if v and "configMap" in v:
            check(v["configMap"]["name"] == cm["metadata"]["name"], "config volume names the ConfigMap")
    check(set(host) == HOST_PATHS, f"host mounts are exactly {sorted(HOST_PATHS)}, not {sorted(host)}")

    config = yaml.safe_load(cm["data"]["config.yaml"])
    check(config.get("kubernetes", {}).get("enabled") is True, "config enables Kubernetes discovery")
    check(
        config.get("metrics", {}).get("listen", "").startswith("0.0.0.0:"),
        "config serves health on all addresses (the kubelet probes the pod IP)",
    )
    check(config.get("metrics", {}).get("listen", "").endswith(":9464"), "config listens on 9464")
    check(
        set(config) <= {"kubernetes", "metrics", "ring_buffer_mib", "tracing", "export"},
        f"config keys are ones the agent knows: {sorted(config)}",
    )

    if a.compare:
        mine, theirs = summary(objs), summary(load(a.compare))
        for key in mine:
            check(mine[key] == theirs[key], f"{key} differs from {a.compare}: {mine[key]} vs {theirs[key]}")

    if errors:
        for e in errors:
            print(f"FAIL {a.file}: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"ok   {a.file}: wiring and privileges as documented")


if __name__ == "__main__":
    main()
