#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 60), one after
# another on one core. Prints one summary line per target; exits non-zero
# if any target crashed (the input is left in fuzz/artifacts/TARGET/).
#
#   fuzz/run-all.sh 600     # ten minutes per target
#
# Stable Rust only: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly
# flags (-Zsanitizer=address and friends) to the stable compiler.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "== cargo fuzz build"
cargo fuzz build

mkdir -p logs
failed=()
summaries=()
for target in $(cargo fuzz list); do
    # Grown corpora live in corpus/ (not committed); seeds/ is read too.
    mkdir -p "corpus/$target" "seeds/$target"
    log="logs/$target.log"
    echo "== $target: ${seconds}s, log in fuzz/$log"
    status=ok
    # --jobs 1: one libFuzzer process in the foreground (cargo fuzz then
    # passes no -fork/-jobs); -timeout catches hangs.
    if ! cargo fuzz run --jobs 1 "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        status=CRASH
        failed+=("$target")
        tail -n 40 "$log"
    fi
    runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    cov=$(sed -n 's/.*\(cov: [0-9]*\).*\(ft: [0-9]*\).*\(corp: [0-9]*\).*/\1 \2 \3/p' <<<"$last")
    summaries+=("$(printf '%-14s %-6s %s; %s' "$target" "$status" "${runs:-no final count}" "${cov:-no coverage line}")")
done

echo "== summary"
printf '%s\n' "${summaries[@]}"
if ((${#failed[@]})); then
    echo "crashed: ${failed[*]}"
    exit 1
fi
