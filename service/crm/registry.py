"""The inbound sources served at ``POST /webhooks/{source}``."""

from __future__ import annotations

from service.crm import generic
from service.crm.base import Adapter

ADAPTERS: dict[str, Adapter] = {adapter.source: adapter for adapter in (generic.ADAPTER,)}
