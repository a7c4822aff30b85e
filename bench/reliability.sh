#!/usr/bin/env bash
# Reliability run (issue 7): the scenarios of tests/it/reliability.rs, each on its own, in release
# mode, with the CRM outage of the issue (connections refused for 60 s, then 503s, then
# recovery). Prints one row per scenario: what was checked, pass/fail, duration; then what each
# scenario saw. Exits 1 if any scenario failed (its output is kept and its path printed).
#
#   bash bench/reliability.sh                        # LEADGATE_OUTAGE_SECS=60
#   LEADGATE_OUTAGE_SECS=10 bash bench/reliability.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export LEADGATE_OUTAGE_SECS="${LEADGATE_OUTAGE_SECS:-60}"

logs="$(mktemp -d)"
echo "building the test binary (release)..." >&2
cargo test --release --locked --quiet --test it --no-run 2>"$logs/build.log" || {
  cat "$logs/build.log" >&2
  exit 1
}

scenarios=(
  "crash|crash_sigkill_mid_load_loses_no_acknowledged_lead_and_creates_each_contact_once|SIGKILL mid-load, restart: acked events stored, each contact created once"
  "outage|crm_outage_refused_then_503_then_recovered_delivers_every_lead_once_with_backoff_in_metrics|refused ${LEADGATE_OUTAGE_SECS} s, then 503, then up: all delivered once, backoff in /metrics"
  "429 storm|storm_of_429s_no_request_arrives_before_retry_after_and_every_lead_arrives_once|no request before Retry-After, all delivered once"
)

rows=()
failed=0
for s in "${scenarios[@]}"; do
  IFS='|' read -r name test what <<<"$s"
  log="$logs/${test}.log"
  echo "running: $name..." >&2
  start=$(date +%s.%N)
  if cargo test --release --locked --quiet --test it -- --exact "reliability::$test" --nocapture \
    >"$log" 2>&1; then
    result=pass
  else
    result=FAIL
    failed=1
  fi
  end=$(date +%s.%N)
  rows+=("$(printf '| %-9s | %-88s | %-6s | %7.1f s |' "$name" "$what" "$result" "$(awk "BEGIN{print $end - $start}")")")
done

echo
echo "leadgate reliability, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, LEADGATE_OUTAGE_SECS=$LEADGATE_OUTAGE_SECS"
echo
printf '| %-9s | %-88s | %-6s | %9s |\n' scenario checked result duration
printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..11})" "$(printf -- '-%.0s' {1..90})" "$(printf -- '-%.0s' {1..8})" "$(printf -- '-%.0s' {1..11})"
printf '%s\n' "${rows[@]}"
echo
grep -h '^reliability:' "$logs"/*.log | sed 's/^reliability: /  /' || true
if [ "$failed" = 1 ]; then
  echo
  echo "failed; test output in $logs" >&2
  exit 1
fi
rm -rf "$logs"
