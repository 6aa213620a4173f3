#!/usr/bin/env python3
"""`helm template` for machines without a helm binary.

Renders a chart with Helm's own engine (the Helm v4 Go SDK, through the
helm-python-sdk package's libhelm_c), applying values.schema.json like helm
does. Writes the rendered manifests (not NOTES.txt) as one multi-document
YAML stream to stdout.

usage: helm_template.py CHART RELEASE NAMESPACE [VALUES.yaml|json ...]
"""
import json
import sys

import yaml

try:
    import helm_python as helm
except ImportError:
    sys.exit(
        "helm_template.py: the helm-python-sdk package is missing: "
        "python3 -m pip install helm-python-sdk==0.2.2"
    )


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    chart_dir, release, namespace, *value_files = sys.argv[1:]
    values: dict = {}
    for path in value_files:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        layer = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        values = merge(values, layer or {})
    with helm.Chart.load(chart_dir) as chart:
        rendered = chart.render(values, name=release, namespace=namespace)
    for path in sorted(rendered):
        if path.endswith("NOTES.txt") or not rendered[path].strip():
            continue
        print(f"---\n# Source: {path}\n{rendered[path].strip()}")


def merge(base: dict, layer: dict) -> dict:
    """Deep merge of values, later files winning (as helm -f does)."""
    out = dict(base)
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


if __name__ == "__main__":
    main()
