"""The loaded policy set, swappable at runtime (SIGHUP or the admin API) without a restart.

A reload that fails validation keeps the previous set running: a typo in production must not
stop the clocks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service import metrics
from service.policy_file import load_policy_file, load_policy_text
from service.sla.engine import CalendarLookup, calendar_lookup
from service.sla.policy import PolicySet

log = logging.getLogger(__name__)

EXAMPLE_POLICY_FILE = Path(__file__).parent / "examples" / "policies.yaml"


def policy_file_path(configured: str | None) -> Path:
    """The policy file a server runs: ``LEAD_SLA_POLICY_FILE``, else the built-in examples."""
    return Path(configured) if configured else EXAMPLE_POLICY_FILE


@dataclass(frozen=True, slots=True)
class LoadedPolicies:
    policy_set: PolicySet
    calendars: CalendarLookup
    path: Path

    @property
    def version(self) -> str:
        return self.policy_set.version


def load(path: Path, env: Mapping[str, str]) -> LoadedPolicies:
    policy_set = load_policy_file(path, env)
    return LoadedPolicies(policy_set, calendar_lookup(policy_set.calendars), path)


def load_text(text: str, name: str, env: Mapping[str, str]) -> LoadedPolicies:
    """A policy file given as text, e.g. a backtest candidate posted to the API."""
    policy_set = load_policy_text(text, name, env)
    return LoadedPolicies(policy_set, calendar_lookup(policy_set.calendars), Path(name))


class PolicyStore:
    def __init__(self, path: str | None, env: Mapping[str, str]) -> None:
        self.path = policy_file_path(path)
        self.env = env
        self.current = load(self.path, env)
        self._label_sets()

    def reload(self) -> LoadedPolicies:
        """Load the file again; on error keep the running set and re-raise."""
        try:
            loaded = load(self.path, self.env)
        except Exception:
            metrics.POLICY_RELOADS.labels("error").inc()
            log.exception("policy reload failed; keeping version %s", self.current.version)
            raise
        metrics.POLICY_RELOADS.labels("ok").inc()
        if loaded.version != self.current.version:
            log.info("policies reloaded: %s -> %s", self.current.version, loaded.version)
        self.current = loaded
        self._label_sets()
        return loaded

    def _label_sets(self) -> None:
        policy_set = self.current.policy_set
        metrics.LABELS.configure(policy_set.teams, (p.id for p in policy_set.policies))
        metrics.precreate_policy_series()
