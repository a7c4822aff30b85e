#!/usr/bin/env bash
# Delivery benchmark: 10,000 leads queued, the real delivery worker, a HubSpot-like fake that
# enforces 100 requests per 10 s and 100 records per batch. Prints drain time against the ideal
# (10 s), API calls per lead, requests past the quota (target 0) and 429s received.
#
#   bash bench/delivery.sh          # LEADS=10000 by default; SQLite, then 3 workers on PostgreSQL
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --locked --quiet --example delivery_bench
# The same drain with three workers sharing one PostgreSQL database (one lease, one quota).
REPLICAS=3 cargo run --release --locked --quiet --example delivery_bench
