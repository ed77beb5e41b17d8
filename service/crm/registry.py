"""The inbound sources served at ``POST /webhooks/{source}``."""

from __future__ import annotations

from service.crm import close, generic, hubspot, pipedrive, rdstation, salesforce, zoho
from service.crm.base import Adapter

ADAPTERS: dict[str, Adapter] = {
    adapter.source: adapter
    for adapter in (
        generic.ADAPTER,
        hubspot.ADAPTER,
        pipedrive.ADAPTER,
        salesforce.ADAPTER,
        rdstation.ADAPTER,
        close.ADAPTER,
        zoho.ADAPTER,
    )
}
