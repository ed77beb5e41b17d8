"""The pure SLA core: no I/O, no clock reads, no framework imports.

Everything here takes its inputs (policy, calendar, a lead's events, ``now``) as arguments and
returns values, so the same functions serve ingest, the sweep, backtests and ``explain``.
"""
