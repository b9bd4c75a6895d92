#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time (FUZZ_SECONDS each, default 30).
#
# The toolchain is stable; cargo-fuzz passes nightly-only rustc flags (-Zsanitizer=...,
# sanitizer coverage), so RUSTC_BOOTSTRAP=1 lets stable rustc accept them. See fuzz/README.md.
#
# Corpus: the committed seeds in fuzz/corpus/<target>/ are read; what the run discovers goes to
# a working corpus under $IOTC_CI_CACHE/fuzz-corpus/<target>/ (kept between runs on the same
# machine, never written into the clone). A crash fails the run; its input is in
# fuzz/artifacts/<target>/ and is printed in base64 so CI logs keep it.
#
# FUZZ_SANITIZER (default address; CI gives none, see below), FUZZ_JOBS targets at once
# (default 1); FUZZ_BUILD_ONLY=1 installs cargo-fuzz and builds
# the targets, nothing more (CI builds them early, in the background).
#
# Usage: scripts/fuzz.sh [target...]   (default: every target)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-30}
cache=${IOTC_CI_CACHE:-$HOME/.cache/iotc-ci}
export RUSTC_BOOTSTRAP=1
# The fuzz crate is its own workspace with its own target dir, kept in the CI cache so a
# rerun on the same machine does not rebuild every dependency with AddressSanitizer.
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$cache/fuzz-target}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

# One build of every target (release profile of fuzz/Cargo.toml, debug assertions on, the
# sanitizer asked for). Without AddressSanitizer libFuzzer still stops at every panic, abort,
# timeout and out-of-memory; what ASan adds is checking the memory accesses of unsafe code and
# of the C in aws-lc and SQLite, at a higher build cost.
sanitizer=${FUZZ_SANITIZER:-address}
cargo fuzz build --fuzz-dir fuzz -O --debug-assertions -s "$sanitizer"

[ -n "${FUZZ_BUILD_ONLY:-}" ] && exit 0

# fuzz_one TARGET: runs it (the build above is reused) and prints its result as one block.
fuzz_one() {
  local t=$1 work="$cache/fuzz-corpus/$1" log="$cache/fuzz-$1.log"
  mkdir -p "$work"
  if ! cargo fuzz run --fuzz-dir fuzz -O --debug-assertions -s "$sanitizer" "$t" "$work" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
      -print_final_stats=1 2>"$log"; then
    {
      echo "fuzz: $t FAILED"
      tail -40 "$log"
      for a in fuzz/artifacts/"$t"/*; do
        [ -f "$a" ] && { echo "crash input $a (base64):"; base64 -w0 "$a"; echo; }
      done
    } >&2
    return 1
  fi
  echo "fuzz: $t ran ${seconds}s: $(grep -E "^stat::number_of_executed_units" "$log" | tr -s ' ' | cut -d: -f4) runs, $(grep -oE "cov: [0-9]+" "$log" | tail -1)"
}

jobs=${FUZZ_JOBS:-1}
echo "fuzz: ${#targets[@]} target(s), ${seconds}s each, $jobs at a time"
status=0
pids=()
for t in "${targets[@]}"; do
  fuzz_one "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
