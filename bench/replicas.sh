#!/usr/bin/env bash
# Ingest with several replicas: signed Typeform deliveries over keep-alive connections to
# `leadgate serve` on the SQLite store (one process), on PostgreSQL (one replica), and on
# PostgreSQL with two replicas sharing the database (the load split between them), in one run.
# Every replica runs its pipeline and delivery worker (dry-run CRM) as in production.
#
#   bash bench/replicas.sh          # DURATION=10 CONNECTIONS=64; LEADGATE_TEST_POSTGRES as in the tests
#
# Target (2-core machine): >= 5,000 signed webhooks/s acknowledged by one PostgreSQL replica.
# The delivery drain with three replicas is in bench/delivery.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
SERVER=${LEADGATE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}

cargo build --release --locked --workspace --bins >&2
bin=target/release
work=$(mktemp -d)
db="leadgate_bench_$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  psql "$SERVER" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
psql "$SERVER" -qc "CREATE DATABASE $db" >/dev/null
pg_url="${SERVER%/*}/$db"
export BENCH_TYPEFORM_SECRET=bench-secret

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME STORE_URL: sets $port; the server's directory is $work/NAME. Not called in a
# subshell, so its pid lands in $pids for stop_all and the exit trap.
start() {
  local dir="$work/$1"
  port=$(free_port)
  mkdir -p "$dir"
  cat > "$dir/leadgate.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$port"
public_url = "http://127.0.0.1:$port"
[store]
url = "$2"
[[sources]]
name = "typeform"
scheme = "typeform"
secret_env = "BENCH_TYPEFORM_SECRET"
TOML
  "$bin/leadgate" --config "$dir/leadgate.toml" serve > "$dir/server.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
}

load() { # PORT CONNECTIONS RUN_ID
  "$bin/loadgen" --addr "127.0.0.1:$1" --duration "$DURATION" --connections "$2" --json \
    --kind typeform --path /webhooks/typeform --secret "$BENCH_TYPEFORM_SECRET" --run-id "$3"
}

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
}

start sqlite "sqlite://data/leadgate.db"
sqlite=$(load "$port" "$CONNECTIONS" "s$$")
stop_all

start pg1 "$pg_url"
pg1=$(load "$port" "$CONNECTIONS" "p$$")
stop_all

start pg2a "$pg_url"
a=$port
start pg2b "$pg_url"
b=$port
half=$((CONNECTIONS / 2))
load "$a" "$half" "qa$$" > "$work/qa.json" &
la=$!
load "$b" "$half" "qb$$" > "$work/qb.json" &
lb=$!
wait "$la" "$lb"
stop_all
stored=$(psql "$pg_url" -tAc "SELECT COUNT(*) FROM events")

python3 - "$sqlite" "$pg1" "$(cat "$work/qa.json")" "$(cat "$work/qb.json")" "$stored" <<'PY'
import json, sys, os, platform, datetime
s, p1, qa, qb = (json.loads(x) for x in sys.argv[1:5])
stored = int(sys.argv[5])
cpu = next((l.split(":",1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"leadgate ingest with replicas — {datetime.date.today()} — {os.cpu_count()} cores, {cpu}")
print(f"{'store':<32}{'conns':>6}{'ok/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}")
base = s["ok_per_s"] or 1
def row(name, conns, ok, p50, p99):
    print(f"{name:<32}{conns:>6}{ok:>10.0f}{p50:>9.2f}{p99:>9.2f}{ok / base:>8.2f}")
row("sqlite, 1 process", s["connections"], s["ok_per_s"], s["p50_ms"], s["p99_ms"])
row("postgres, 1 replica", p1["connections"], p1["ok_per_s"], p1["p50_ms"], p1["p99_ms"])
row("postgres, 2 replicas (sum)", qa["connections"] + qb["connections"], qa["ok_per_s"] + qb["ok_per_s"],
    max(qa["p50_ms"], qb["p50_ms"]), max(qa["p99_ms"], qb["p99_ms"]))
acked = sum(v for r in (p1, qa, qb) for k, v in r["statuses"].items() if k.startswith("2"))
errors = {k: v for r in (s, p1, qa, qb) for k, v in r["statuses"].items() if not k.startswith("2")}
print(f"postgres events stored {stored} for {acked} acknowledged; non-2xx {errors}")
print(f"target: >= 5000/s by one postgres replica: {'PASS' if p1['ok_per_s'] >= 5000 else 'FAIL'}")
PY
