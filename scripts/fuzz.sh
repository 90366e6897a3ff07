#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS each; fails on any crash,
# leak or timeout. The committed seeds are fuzz/corpus/<target>/ (read-only here); what the
# fuzzer finds goes to target/fuzz-corpus/<target>/, crashes to fuzz/artifacts/<target>/.
#
# With the nightly toolchain: AddressSanitizer (memory errors, leaks). Without it (a fresh CI
# machine has stable only, and no toolchain can be fetched there): the same libFuzzer targets
# with `-s none`, coverage-guided, panics and timeouts still fatal, no leak detection.
# FUZZ_TOOLCHAIN=stable|nightly forces one. A summary goes to target/fuzz-summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-600}
targets=${FUZZ_TARGETS:-"policy google_authenticator u2f_authfile fido2 login"}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
toolchain=${FUZZ_TOOLCHAIN:-}
if [ -z "$toolchain" ]; then
    if rustup run nightly rustc --version >/dev/null 2>&1; then toolchain=nightly; else toolchain=stable; fi
fi
if [ "$toolchain" = nightly ]; then
    sanitizer=address
else
    sanitizer=none
    echo "fuzz: toolchain $toolchain: libFuzzer without a sanitizer (no leak detection; the nightly toolchain adds AddressSanitizer)" >&2
fi

summary=target/fuzz-summary.txt
mkdir -p target
echo "# target seconds executions (toolchain $toolchain, sanitizer $sanitizer)" >"$summary"
for t in $targets; do
    mkdir -p "target/fuzz-corpus/$t"
    log="target/fuzz-$t.log"
    echo "fuzz: $t for ${seconds}s" >&2
    # -timeout: one input taking longer than 10 s is a finding (a hang). The engine's audit
    # lines (stderr, one per event) are dropped from the log.
    if ! cargo "+$toolchain" fuzz run -s "$sanitizer" "$t" "target/fuzz-corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
        | grep -av '^twofactord: ' >"$log"; then
        grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" | head -20 >&2 || true
        echo "fuzz: $t FAILED (log: $log; the input is in fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    echo "$t $seconds ${runs:-?}" | tee -a "$summary"
done
echo "fuzz: every target ran ${seconds}s without a finding (summary: $summary)"
