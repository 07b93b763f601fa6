#!/usr/bin/env bash
# Where ringlb spends what the limit does not: runs ringlb and
# ../shared/bench/uring-limit one after the other under the same wrk load
# and prints, per request,
#   - io_uring events (SQEs, poll arms, io_uring_enter calls) and TCP
#     segments, from perf stat's tracepoints and nstat;
#   - the CPU per symbol (perf record, cpu-clock), the symbols with the
#     largest difference first.
#
# Usage: perf/against-limit.sh [small|many|close] [SECONDS]
# Needs: nginx (the origin), wrk, perf, nstat (Debian: nginx wrk linux-perf iproute2).
# perf's own overhead inflates both columns alike; compare, do not add up.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH_CONFIGS:-$ROOT/../shared/bench}
SCENARIO=${1:-many}
SECONDS_=${2:-8}
RINGLB=${RINGLB_BIN:-$ROOT/target/release/ringlb}

for tool in nginx wrk perf nstat python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "against-limit.sh needs $tool" >&2; exit 1; }
done
[ -x "$RINGLB" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -x "$BENCH/uring-limit" ] || { echo "missing $BENCH/uring-limit" >&2; exit 1; }

W=$(mktemp -d /tmp/ringlb-limit.XXXXXX)
chmod 755 "$W"
mkdir -p "$W/www" "$W/logs"
printf 'hello world\n' > "$W/www/small"
sed "s#@W@#$W#g; s#@WORKERS@#2#g" "$BENCH/origin.nginx.conf" > "$W/origin.nginx.conf"
sed "s#@WORKERS@#2#g; s#@CERT@#$ROOT/certs/server.pem#g; s#@KEY@#$ROOT/certs/server.key#g" \
    "$ROOT/perf/ringlb.bench.toml" > "$W/ringlb.toml"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

nginx -c "$W/origin.nginx.conf" -g 'daemon off;' & PIDS+=($!)
"$RINGLB" --config "$W/ringlb.toml" 2>"$W/logs/ringlb.err" & PIDS+=($!); RINGLB_PID=$!
RB_SHARED=1 RB_BUF=65536 RB_NBUF=1024 "$BENCH/uring-limit" --listen 127.0.0.1:17040 \
    --backend 127.0.0.1:17001 --workers 2 2>"$W/logs/limit.err" & PIDS+=($!); LIMIT_PID=$!
for port in 17030 17040; do
    for _ in $(seq 50); do curl -fs -o /dev/null "http://127.0.0.1:$port/small" && break; sleep 0.1; done
done

case "$SCENARIO" in
    small) CONNS=64; HEADER=() ;;
    many) CONNS=1000; HEADER=() ;;
    close) CONNS=64; HEADER=(-H "Connection: close") ;;
    *) echo "unknown scenario $SCENARIO" >&2; exit 2 ;;
esac

EVENTS=io_uring:io_uring_submit_req,io_uring:io_uring_poll_arm,syscalls:sys_enter_io_uring_enter
for target in "ringlb $RINGLB_PID 17030" "limit $LIMIT_PID 17040"; do
    set -- $target
    name=$1 pid=$2 port=$3
    # Events and segments: one load.
    wrk -t 2 -c "$CONNS" -d "$((SECONDS_ + 2))s" "${HEADER[@]}" "http://127.0.0.1:$port/small" > "$W/$name.ev.wrk" 2>&1 & WRK=$!
    sleep 1
    nstat -n >/dev/null
    perf stat -x, -e "$EVENTS" -p "$pid" -o "$W/$name.stat" -- sleep "$SECONDS_" 2>/dev/null
    nstat -z 2>/dev/null > "$W/$name.nstat"
    wait "$WRK" || true
    # Profile: a second load of the same shape.
    wrk -t 2 -c "$CONNS" -d "$((SECONDS_ + 2))s" "${HEADER[@]}" "http://127.0.0.1:$port/small" > "$W/$name.wrk" 2>&1 & WRK=$!
    sleep 1
    perf record -q -F 999 -e cpu-clock -p "$pid" -o "$W/$name.data" -- sleep "$SECONDS_" 2>/dev/null
    wait "$WRK" || true
    perf report -i "$W/$name.data" --no-children --sort symbol -g none -n --stdio 2>/dev/null \
        | awk '/^ +[0-9.]+%/ { n = $2; $1 = ""; $2 = ""; $3 = ""; sub(/^ +/, ""); print n "\t" $0 }' \
        > "$W/$name.samples"
done

python3 - "$W" "$SECONDS_" <<'PY'
import re, sys
w, secs = sys.argv[1], float(sys.argv[2])

def rps(name):
    for line in open(f"{w}/{name}"):
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    sys.exit(f"wrk gave no rate in {name}")

print("== per request (events over the measured seconds)")
for name in ("ringlb", "limit"):
    reqs = rps(f"{name}.ev.wrk") * secs
    row = {}
    for line in open(f"{w}/{name}.stat"):
        f = line.strip().split(",")
        if len(f) > 2 and f[0].replace(".", "").isdigit():
            row[f[2].split(":")[-1]] = float(f[0]) / reqs
    for line in open(f"{w}/{name}.nstat"):
        f = line.split()
        if f and f[0] == "TcpOutSegs":
            row["tcp segments out"] = float(f[1]) / reqs
    print(f"{name:7s}", "  ".join(f"{k} {v:.3f}" for k, v in row.items()))

def load(name):
    per_req = 1e6 / (rps(f"{name}.wrk") * secs)  # one sample is 1 ms of CPU
    out = {}
    for line in open(f"{w}/{name}.samples"):
        n, sym = line.rstrip("\n").split("\t", 1)
        sym = re.sub(r"\s+-\s+-\s*$", "", sym).strip()
        out[sym] = out.get(sym, 0) + int(n) * per_req / 1000
    return out

r, l = load("ringlb"), load("limit")
print(f"== CPU per request (µs): ringlb {sum(r.values()):.2f}, limit {sum(l.values()):.2f}")
print(f"{'ringlb':>7s} {'limit':>7s}  symbol (largest difference first)")
for sym in sorted(set(r) | set(l), key=lambda s: -abs(r.get(s, 0) - l.get(s, 0)))[:40]:
    print(f"{r.get(sym, 0):7.3f} {l.get(sym, 0):7.3f}  {sym[:100]}")
PY
