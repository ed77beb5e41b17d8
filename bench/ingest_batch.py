"""Ingest throughput with 100-event batches: the real ``POST /webhooks/generic`` against the
minimal ``baseline_server.py`` endpoint inserting the same 100 rows per request with one
executemany and one commit, both served by uvicorn in one worker process on loopback, against
the same database, loaded alternately in the same run.

    python bench/ingest_batch.py                        # PostgreSQL, 5 runs per side

Target: the service stores at least 10,000 events/s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_ingest_arguments, compare_ingest, print_header, summarize_ingest

TARGET_EVENTS_S = 10_000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_ingest_arguments(parser, requests=150, concurrency=8, warmup=10)
    parser.add_argument("--batch-size", type=int, default=100, help="events per request")
    args = parser.parse_args()
    print_header(
        "ingest, batched requests",
        {
            "database": args.database_url,
            "load": f"{args.requests} requests of {args.batch_size} events x {args.runs} runs "
            f"per side, {args.concurrency} connections, {args.warmup} warm-up requests per run",
        },
    )
    results = compare_ingest(args, mode="batch", batch_size=args.batch_size)
    events_s, _ = summarize_ingest(results, "events_s", "events/s")
    verdict = "met" if events_s >= TARGET_EVENTS_S else "MISSED"
    print(f"   target: >= {TARGET_EVENTS_S:,} events/s -> {events_s:,.0f} events/s, {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
