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

# One build of every target (release, debug assertions on, AddressSanitizer).
cargo fuzz build --fuzz-dir fuzz -O --debug-assertions

status=0
for t in "${targets[@]}"; do
  work="$cache/fuzz-corpus/$t"
  mkdir -p "$work"
  echo "fuzz: $t for ${seconds}s"
  if ! cargo fuzz run --fuzz-dir fuzz -O --debug-assertions "$t" "$work" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
      -print_final_stats=1 2>"$cache/fuzz-$t.log"; then
    status=1
    echo "fuzz: $t FAILED" >&2
    tail -40 "$cache/fuzz-$t.log" >&2
    for a in fuzz/artifacts/"$t"/*; do
      [ -f "$a" ] && { echo "crash input $a (base64):" >&2; base64 -w0 "$a" >&2; echo >&2; }
    done
  else
    grep -E "^stat::(number_of_executed_units|new_units_added)|cov:|corp:" "$cache/fuzz-$t.log" | tail -3 || true
  fi
done
exit $status
