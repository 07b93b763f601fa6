#!/usr/bin/env bash
# Profiles ringlb under wrk load with perf (cpu-clock sampling, which works
# in VMs without hardware counters) and prints the top symbols; writes a
# flamegraph SVG too when inferno is installed (cargo install inferno).
#
# Usage: perf/profile.sh [small|big|close|many] [SECONDS]
# Needs: nginx (the origin), wrk, perf (Debian: apt-get install -y nginx wrk linux-perf).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH_CONFIGS:-$ROOT/../shared/bench}
SCENARIO=${1:-many}
SECONDS_=${2:-10}
WORKERS=${WORKERS:-$(nproc)}

for tool in nginx wrk perf; do
    command -v "$tool" >/dev/null 2>&1 || { echo "profile.sh needs $tool (apt-get install -y nginx wrk linux-perf)" >&2; exit 1; }
done
(cd "$ROOT" && cargo build --release --quiet)

W=$(mktemp -d /tmp/ringlb-profile.XXXXXX)
chmod 755 "$W"
mkdir -p "$W/www" "$W/logs"
printf 'hello world\n' > "$W/www/small"
head -c 65536 /dev/zero | tr '\0' 'x' > "$W/www/big"
sed "s#@W@#$W#g; s#@WORKERS@#$WORKERS#g" "$BENCH/origin.nginx.conf" > "$W/origin.nginx.conf"
sed "s#@WORKERS@#$WORKERS#g; s#@CERT@#$ROOT/certs/server.pem#g; s#@KEY@#$ROOT/certs/server.key#g" \
    "$ROOT/perf/ringlb.bench.toml" > "$W/ringlb.toml"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

nginx -c "$W/origin.nginx.conf" -g 'daemon off;' & PIDS+=($!)
"$ROOT/target/release/ringlb" --config "$W/ringlb.toml" 2>"$W/logs/ringlb.err" & PIDS+=($!); RINGLB_PID=$!
for _ in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:17030/small && break; sleep 0.1; done

case "$SCENARIO" in
    small) ARGS="-c 64 http://127.0.0.1:17030/small" ;;
    big) ARGS="-c 64 http://127.0.0.1:17030/big" ;;
    close) ARGS="-c 64 -H Connection:close http://127.0.0.1:17030/small" ;;
    many) ARGS="-c 1000 http://127.0.0.1:17030/small" ;;
    *) echo "unknown scenario $SCENARIO" >&2; exit 2 ;;
esac

# shellcheck disable=SC2086
wrk -t 2 -d "$((SECONDS_ + 2))s" $ARGS > "$W/wrk.txt" 2>&1 & WRK=$!
sleep 1
perf record -q -F 999 -e cpu-clock -g -p "$RINGLB_PID" -o "$W/perf.data" -- sleep "$SECONDS_" 2>/dev/null
wait "$WRK" || true
grep -E "Requests/sec|Latency" "$W/wrk.txt"

echo "== top symbols (self time) for ringlb, scenario $SCENARIO"
perf report -i "$W/perf.data" --no-children --sort symbol -g none --stdio 2>/dev/null \
    | awk '/^ +[0-9.]+%/ { $1 = sprintf("%7s", $1); sub(/ +- +- *$/, ""); print }' | head -30 || true
echo "== share of samples in the kernel ([k]) and in ringlb's own code ([.])"
perf report -i "$W/perf.data" --no-children --sort symbol -g none --stdio 2>/dev/null \
    | awk '/^ +[0-9.]+%/ { p = $1; sub(/%/, "", p); if ($2 == "[k]") k += p; else u += p }
           END { printf "kernel %.1f%%, user %.1f%%\n", k, u }'

if command -v inferno-collapse-perf >/dev/null 2>&1; then
    out=$ROOT/perf/flamegraph-$SCENARIO.svg
    perf script -i "$W/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph > "$out"
    echo "flamegraph: $out"
fi
rm -rf "$W"
