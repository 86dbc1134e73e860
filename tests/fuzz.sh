#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz + libFuzzer, nightly Rust) for a
# bounded time and fails if any of them finds a crash, a hang or an input
# that breaks its invariant (crates/config/src/fuzzing.rs).
#
#   bash tests/fuzz.sh                       # every target, FUZZ_SECONDS each
#   FUZZ_SECONDS=600 bash tests/fuzz.sh pgoutput config
#
# Environment:
#   FUZZ_SECONDS     time per target (default 30)
#   FUZZ_TIMEOUT     seconds one input may take before it counts as a hang (default 10)
#   FUZZ_RSS_MB      memory limit of the fuzzer process (default 2048)
#   FUZZ_TARGET_DIR  cargo target dir of the fuzz build (default
#                    ${XDG_CACHE_HOME:-~/.cache}/switchyard-fuzz-target: outside
#                    the clone, so a second run, another worktree or CI on the
#                    same machine rebuilds only what changed)
#
# Build choices (measured, see README "Fuzzing"): no sanitizer (`-s none`:
# the fuzzed code is safe Rust, ASan only slows it and the build), release
# with debug assertions and overflow checks (`-O -a`). The targets depend
# only on the crates they parse with (switchyard-config, switchyard-sources;
# the WebAssembly engine is not built: fuzz/Cargo.toml). All targets are
# built by one cargo invocation; the runs reuse that build.
#
# New inputs go to fuzz/corpus/<target>/ (not committed); the committed
# seeds in fuzz/seeds/<target>/ are read only. A failing input is saved in
# fuzz/artifacts/<target>/; reproduce it with
#   cargo +nightly fuzz run -s none -O -a --target-dir "$FUZZ_TARGET_DIR" <target> fuzz/artifacts/<target>/<file>
# and add it as a regression unit test next to the parser.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${FUZZ_SECONDS:-30}"
TIMEOUT="${FUZZ_TIMEOUT:-10}"
RSS_MB="${FUZZ_RSS_MB:-2048}"
TARGET_DIR="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-fuzz-target}"
ALL=(ingest_body pgoutput config event_decode)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "tests/fuzz.sh: FAILED: the nightly Rust toolchain is not installed, and cargo-fuzz (libFuzzer) needs it." >&2
  echo "  Install it with: rustup toolchain install nightly --profile minimal" >&2
  echo "  (The stable property tests in crates/config/src/fuzzing.rs run with 'cargo test' without it.)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "tests/fuzz.sh: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked --version 0.13.2 >&2
fi

FLAGS=(-s none -O -a --target-dir "$TARGET_DIR")
start=$(date +%s)
echo "fuzz: building ${TARGETS[*]} (nightly: $(rustup run nightly rustc --version))" >&2
for t in "${TARGETS[@]}"; do [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "no fuzz target $t" >&2; exit 2; }; done
if [ ${#TARGETS[@]} -eq ${#ALL[@]} ]; then
  cargo +nightly fuzz build "${FLAGS[@]}"
else
  for t in "${TARGETS[@]}"; do cargo +nightly fuzz build "${FLAGS[@]}" "$t"; done
fi
echo "fuzz: build took $(( $(date +%s) - start )) s" >&2

failed=()
summary=()
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=("-dict=fuzz/dict/$t.dict")
  log="fuzz/artifacts/$t/last-run.log"
  echo "fuzz: $t for ${SECONDS_EACH}s" >&2
  set +e
  cargo +nightly fuzz run "${FLAGS[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" \
    -max_len=65536 -print_final_stats=1 "${dict[@]}" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  rate="?"
  if [ -n "${runs:-}" ] && [ -n "${secs:-}" ] && [ "$secs" -gt 0 ]; then rate=$((runs / secs)); fi
  if [ $rc -ne 0 ]; then
    failed+=("$t")
    echo "fuzz: $t FAILED (exit $rc); last lines of $log:" >&2
    tail -40 "$log" >&2
    summary+=("$t: FAILED, see $log and fuzz/artifacts/$t/")
  else
    summary+=("$t: ok, ${runs:-?} runs in ${secs:-?} s (${rate} exec/s), coverage ${cov:-?}, corpus $(ls "fuzz/corpus/$t" | wc -l) inputs")
  fi
done

echo "fuzz summary ($(( $(date +%s) - start )) s in all):"
for s in "${summary[@]}"; do echo "  $s"; done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
