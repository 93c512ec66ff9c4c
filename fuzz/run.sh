#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time, starting from the
# committed seeds (fuzz/seeds/<target>) with a scratch corpus in fuzz/corpus/.
# The full libFuzzer output of each target is kept in fuzz/corpus/<target>.log.
# Usage: fuzz/run.sh [seconds-per-target] [target...]
# Only stable Rust is needed: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use its flags.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(client_negotiation client_transmission server_decoder abi)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  cargo fuzz build -O "$t"
done
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== fuzzing $t for ${secs}s"
  cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
    tee "corpus/$t.log" |
    grep -E '^(Done|stat::)|^#[0-9]+[[:space:]]+DONE|ERROR|panicked' || true
  # A finding leaves an artifact and a non-zero exit; make it fatal.
  if ls "artifacts/$t"/crash-* "artifacts/$t"/leak-* "artifacts/$t"/timeout-* "artifacts/$t"/oom-* >/dev/null 2>&1; then
    echo "fuzz target $t found a failing input:" >&2
    ls "artifacts/$t" >&2
    exit 1
  fi
done
