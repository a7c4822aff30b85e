#!/usr/bin/env bash
# Ingest benchmark: distinct, correctly signed Typeform and Standard Webhooks deliveries over
# keep-alive connections to `leadgate serve` (SQLite store, default logging), and GET /healthz on
# the same server as the HTTP stack's own ceiling. Prints one table.
#
#   bash bench/ingest.sh            # DURATION=10 CONNECTIONS=64 by default
#
# Targets (2-core machine): webhooks/s >= 0.5 x healthz/s; p99 <= 5 ms at half the peak rate;
# peak RSS <= 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}

cargo build --release --locked --workspace --bins >&2
bin=target/release

work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
admin_port=$(free_port)
cat > "$work/leadgate.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin_port"
public_url = "http://127.0.0.1:$port"
[store]
url = "sqlite://data/leadgate.db"
[[sources]]
name = "typeform"
scheme = "typeform"
secret_env = "BENCH_TYPEFORM_SECRET"
[[sources]]
name = "hooks"
scheme = "standard-webhooks"
secret_env = "BENCH_SW_SECRET"
TOML
export BENCH_TYPEFORM_SECRET=bench-secret
export BENCH_SW_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw

"$bin/leadgate" --config "$work/leadgate.toml" serve > "$work/server.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

run() { "$bin/loadgen" --addr "127.0.0.1:$port" --duration "$DURATION" --connections "$CONNECTIONS" --json "$@"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

healthz=$(run --kind get --path /healthz)
typeform=$(run --kind typeform --path /webhooks/typeform --secret "$BENCH_TYPEFORM_SECRET" --run-id "tf$$")
standard=$(run --kind standard-webhooks --path /webhooks/hooks --secret "$BENCH_SW_SECRET" --run-id "sw$$")
peak=$(field "$typeform" ok_per_s)
half=$(python3 -c "print(round($peak/2))")
# The saturating runs leave the background pipeline a backlog; "p99 at half the peak rate" is a
# steady-state figure, so let it drain first (and report how long that took).
catchup=$(python3 - "$work/data/leadgate.db" <<'PY'
import sqlite3, sys, time
t0 = time.time()
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
while time.time() - t0 < 300:
    if db.execute("select count(*) from events where status = 'received'").fetchone()[0] == 0:
        break
    time.sleep(0.5)
print(f"{time.time() - t0:.1f}")
PY
)
halfrun=$(run --kind typeform --path /webhooks/typeform --secret "$BENCH_TYPEFORM_SECRET" --run-id "tfh$$" --rate "$half")
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
stored=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from events').fetchone()[0])" "$work/data/leadgate.db")

python3 - "$healthz" "$typeform" "$standard" "$halfrun" "$rss_kib" "$stored" "$catchup" <<'PY'
import json, sys, os, platform, datetime
h, t, s, half = (json.loads(x) for x in sys.argv[1:5])
rss = int(sys.argv[5]) / 1024
stored = int(sys.argv[6])
catchup = float(sys.argv[7])
cpu = next((l.split(":",1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"leadgate ingest benchmark — {datetime.date.today()} — {os.cpu_count()} cores, {cpu}")
print(f"{'run':<28}{'conns':>6}{'ok/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'ratio':>8}")
for name, r in [("GET /healthz", h), ("typeform (signed)", t), ("standard-webhooks (signed)", s), ("typeform at half peak", half)]:
    ratio = r["ok_per_s"] / h["ok_per_s"] if h["ok_per_s"] else 0
    print(f"{name:<28}{r['connections']:>6}{r['ok_per_s']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['max_ms']:>9.2f}{ratio:>8.2f}")
print(f"pipeline caught up with the saturating runs' backlog in {catchup:.1f} s before the half-peak run")
print(f"peak RSS {rss:.1f} MiB; events stored {stored}; non-2xx/errors: "
      f"{ {k: v for k, v in t['statuses'].items() if not k.startswith('2')} } {t['errors'] + s['errors'] + half['errors']}")
ok_ratio = t["ok_per_s"] / h["ok_per_s"] >= 0.5
print(f"targets: ratio>=0.5 {'PASS' if ok_ratio else 'FAIL'}; p99<=5ms at half peak {'PASS' if half['p99_ms'] <= 5 else 'FAIL'}; RSS<=64MiB {'PASS' if rss <= 64 else 'FAIL'}")
PY
