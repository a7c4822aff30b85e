#!/usr/bin/env bash
# Fuzzing: runs every cargo-fuzz target in fuzz/ for FUZZ_SECS seconds on a COPY of its checked-in
# seed corpus (fuzz/corpus/<target>/), then prints one table. Installs cargo-fuzz if missing.
#
#   bash bench/fuzz.sh                      # FUZZ_SECS=60 per target, all targets
#   FUZZ_SECS=600 bash bench/fuzz.sh decode # one target, longer
#
# Stable toolchain: `cargo fuzz run --sanitizer none` needs no nightly flag (no -Zsanitizer, no
# -Zbuild-std); the coverage instrumentation cargo-fuzz adds (-Cpasses=sancov-module, -Cllvm-args=
# -sanitizer-coverage-*) is accepted by stable rustc, and libfuzzer-sys builds libFuzzer with the
# system C++ compiler. Without a sanitizer, memory errors in unsafe code are not caught, but panics
# (including overflow and debug assertions, which cargo-fuzz turns on) are, and those are what a
# safe-Rust service can hit. The exact command per target is printed before it runs.
#
# Build output goes to FUZZ_TARGET_DIR (default fuzz/target); new corpus entries and crash
# artifacts go to a temporary WORK dir (kept, and named, when a target crashes). To keep a crash as a
# regression: fix it in src/, then copy the artifact into fuzz/corpus/<target>/ — tests/fuzz_corpus.rs
# replays it under plain `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECS=${FUZZ_SECS:-60}
FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-fuzz/target}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode signature mapping)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked >&2
fi

fuzz=(cargo fuzz run --sanitizer none --target-dir "$FUZZ_TARGET_DIR")
for t in "${targets[@]}"; do
  cargo fuzz build --sanitizer none --target-dir "$FUZZ_TARGET_DIR" "$t" >&2
done

work=$(mktemp -d)
rows=()
status=0
for t in "${targets[@]}"; do
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  cp fuzz/corpus/"$t"/* "$work/$t/corpus/"
  seeds=$(find "$work/$t/corpus" -type f | wc -l)
  cmd=("${fuzz[@]}" "$t" "$work/$t/corpus" -- -max_total_time="$FUZZ_SECS" -timeout=10
    -print_final_stats=1 -artifact_prefix="$work/$t/artifacts/")
  echo "+ ${cmd[*]}" >&2
  start=$(date +%s)
  if ! "${cmd[@]}" > "$work/$t/log" 2>&1; then status=1; fi
  secs=$(( $(date +%s) - start ))
  runs=$(sed -n "s/^stat::number_of_executed_units: *//p" "$work/$t/log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$work/$t/log" | tail -1 | cut -d' ' -f2)
  corpus=$(find "$work/$t/corpus" -type f | wc -l)
  crashes=$(find "$work/$t/artifacts" -type f | wc -l)
  rows+=("$t|$secs|${runs:-?}|${cov:-?}|$seeds -> $corpus|$crashes")
  if [ "$crashes" -gt 0 ]; then
    status=1
    grep -m1 -A3 -E "panicked at|ERROR: libFuzzer" "$work/$t/log" >&2 || true
    echo "$t: artifacts in $work/$t/artifacts, log $work/$t/log" >&2
  fi
done

echo "leadgate fuzzing — $(date -u +%Y-%m-%d) — $(nproc) cores, $(rustc --version | cut -d' ' -f1-2), FUZZ_SECS=$FUZZ_SECS"
printf '%-10s %6s %12s %7s %16s %8s\n' target secs runs cov corpus crashes
for r in "${rows[@]}"; do
  IFS='|' read -r t s n c k x <<< "$r"
  printf '%-10s %6s %12s %7s %16s %8s\n' "$t" "$s" "$n" "$c" "$k" "$x"
done
if [ "$status" -eq 0 ]; then rm -rf "$work"; else echo "kept $work" >&2; fi
exit "$status"
