"""Write deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/rules/lead-sla.rules.yaml.

The Prometheus Operator takes rules as a PrometheusRule object whose ``spec.groups`` is exactly
a rules file's ``groups``. The rules file stays the one source (promtool checks and tests it);
this copies its ``groups:`` section, comments and all, under ``spec:``. tests/deploy checks that
the two agree, so run this after every change to the rules file:

    python deploy/scripts/sync_prometheusrule.py
"""

from __future__ import annotations

import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1]
RULES = DEPLOY / "prometheus" / "rules" / "lead-sla.rules.yaml"
TARGET = DEPLOY / "kubernetes" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/rules/lead-sla.rules.yaml by
# deploy/scripts/sync_prometheusrule.py: edit the rules file, then run the script.
# The label below is what a default kube-prometheus-stack ruleSelector looks for; match it to
# your Prometheus resource's ruleSelector.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: lead-sla
  labels:
    app.kubernetes.io/name: lead-sla
    app.kubernetes.io/part-of: lead-sla
    release: prometheus
spec:
"""


def render(rules_text: str) -> str:
    lines = rules_text.splitlines()
    start = lines.index("groups:")
    body = [f"  {line}" if line else "" for line in lines[start:]]
    return HEADER + "\n".join(body).rstrip() + "\n"


def main() -> int:
    TARGET.write_text(render(RULES.read_text()))
    print(f"wrote {TARGET.relative_to(DEPLOY.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
