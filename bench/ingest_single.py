"""Ingest throughput with single-event requests: the real ``POST /webhooks/generic`` (signed,
validated, stored, SLA clocks re-derived, committed before the 202) against the minimal
``baseline_server.py`` endpoint (one INSERT + commit per request), both served by uvicorn in one
worker process on loopback, against the same database, loaded alternately in the same run.

    python bench/ingest_single.py                       # PostgreSQL, 5 runs per side
    python bench/ingest_single.py --database-url sqlite+aiosqlite:////tmp/lead-sla-bench.db

Target: the service sustains at least 50% of the baseline's requests/s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_ingest_arguments, compare_ingest, print_header, summarize_ingest

TARGET_RATIO = 0.50


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_ingest_arguments(parser, requests=2000, concurrency=32, warmup=200)
    args = parser.parse_args()
    print_header(
        "ingest, single-event requests",
        {
            "database": args.database_url,
            "load": f"{args.requests} requests x {args.runs} runs per side, "
            f"{args.concurrency} connections, {args.warmup} warm-up requests per run",
        },
    )
    results = compare_ingest(args, mode="single", batch_size=1)
    _, ratio = summarize_ingest(results, "req_s", "req/s")
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    print(f"   target: service >= {TARGET_RATIO:.0%} of baseline req/s -> {ratio:.0%}, {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
