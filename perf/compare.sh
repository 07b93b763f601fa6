#!/usr/bin/env bash
# Side-by-side wrk comparison of ringlb, nginx and HAProxy as reverse
# proxies in front of the same nginx origin, with the reference configs in
# ../shared/bench/. Rounds alternate between targets so that drift on a
# shared machine hits every target alike; quote the ratios, not absolutes.
#
# Usage: perf/compare.sh [--rounds N] [--duration SECONDS] [--workers N]
#                        [--scenarios "small big close many tls"] [--record]
#   --record  append the table to perf/RESULTS.md (newest first)
#
# Needs: nginx, haproxy, wrk (Debian: apt-get install -y nginx haproxy wrk),
# and a release build of ringlb (built here if missing). Installs nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH_CONFIGS:-$ROOT/../shared/bench}
ROUNDS=3
DURATION=10
WORKERS=$(nproc)
SCENARIOS="small big close many tls"
RECORD=0
WRK_THREADS=${WRK_THREADS:-2}

while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --record) RECORD=1; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

missing=()
for tool in nginx haproxy wrk; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "compare.sh needs: ${missing[*]} (Debian/Ubuntu: apt-get install -y nginx haproxy wrk)" >&2
    exit 1
fi
[ -d "$BENCH" ] || { echo "reference configs not found in $BENCH (set BENCH_CONFIGS)" >&2; exit 1; }

RINGLB=$ROOT/target/release/ringlb
if [ ! -x "$RINGLB" ] || [ -n "$(find "$ROOT/src" -newer "$RINGLB" -name '*.rs' | head -1)" ]; then
    (cd "$ROOT" && cargo build --release --quiet)
fi

W=$(mktemp -d /tmp/ringlb-perf.XXXXXX)
# nginx workers may run as an unprivileged user: they must read www/.
chmod 755 "$W"
mkdir -p "$W/www" "$W/logs"
printf 'hello world\n' > "$W/www/small"                 # 12 bytes
head -c 65536 /dev/zero | tr '\0' 'x' > "$W/www/big"   # 64 KiB

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT INT TERM

render() { sed "s#@W@#$W#g; s#@WORKERS@#$WORKERS#g" "$BENCH/$1" > "$W/$1"; }
render origin.nginx.conf
render proxy.nginx.conf
render proxy.haproxy.cfg
# The tls scenario: each proxy also terminates TLS with the development
# certificate in certs/, on a second port, with everything else as in the
# reference configs.
CERT=$ROOT/certs/server.pem
KEY=$ROOT/certs/server.key
cat "$CERT" "$KEY" > "$W/haproxy.pem"
sed -i "s#listen 127.0.0.1:17010 reuseport backlog=4096;#&\n        listen 127.0.0.1:17011 ssl reuseport backlog=4096;\n        ssl_certificate $CERT;\n        ssl_certificate_key $KEY;#" "$W/proxy.nginx.conf"
sed -i "s#bind 127.0.0.1:17020#&\n    bind 127.0.0.1:17021 ssl crt $W/haproxy.pem alpn http/1.1#" "$W/proxy.haproxy.cfg"
grep -q 17011 "$W/proxy.nginx.conf" && grep -q 17021 "$W/proxy.haproxy.cfg" || { echo "could not add TLS listeners to the peer configs" >&2; exit 1; }
sed "s#@WORKERS@#$WORKERS#g; s#@CERT@#$ROOT/certs/server.pem#g; s#@KEY@#$ROOT/certs/server.key#g" \
    "$ROOT/perf/ringlb.bench.toml" > "$W/ringlb.toml"

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

nginx -c "$W/origin.nginx.conf" -g 'daemon off;' & PIDS+=($!)
nginx -c "$W/proxy.nginx.conf" -g 'daemon off;' & PIDS+=($!); NGINX_PID=$!
haproxy -f "$W/proxy.haproxy.cfg" -db >"$W/logs/haproxy.out" 2>&1 & PIDS+=($!); HAPROXY_PID=$!
"$RINGLB" --config "$W/ringlb.toml" 2>"$W/logs/ringlb.err" & PIDS+=($!); RINGLB_PID=$!

declare -A PORT=([origin]=17001 [nginx]=17010 [haproxy]=17020 [ringlb]=17030)
declare -A TLS_PORT=([origin]="" [nginx]=17011 [haproxy]=17021 [ringlb]=17031)
declare -A PROC=([origin]="" [nginx]=$NGINX_PID [haproxy]=$HAPROXY_PID [ringlb]=$RINGLB_PID)
TARGETS="origin nginx haproxy ringlb"

for t in $TARGETS; do
    for _ in $(seq 50); do
        curl -fs -o /dev/null "http://127.0.0.1:${PORT[$t]}/small" && break
        sleep 0.1
    done
    curl -fs -o /dev/null "http://127.0.0.1:${PORT[$t]}/small" || { echo "$t did not come up" >&2; exit 1; }
done

TICKS=$(getconf CLK_TCK)
# CPU ticks (user+system) of a process and its children (nginx workers).
cpu_ticks() {
    local root=$1 total=0 pid
    [ -n "$root" ] || { echo 0; return; }
    for pid in $root $(pgrep -P "$root" || true); do
        if [ -r "/proc/$pid/stat" ]; then
            total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
        fi
    done
    echo "$total"
}

scenario_args() {
    case "$1" in
        small) echo "-c 64 http://127.0.0.1:PORT/small" ;;
        big) echo "-c 64 http://127.0.0.1:PORT/big" ;;
        close) echo "-c 64 -H Connection:close http://127.0.0.1:PORT/small" ;;
        many) echo "-c 1000 http://127.0.0.1:PORT/small" ;;
        tls) echo "-c 64 https://127.0.0.1:TLSPORT/small" ;;
        *) echo "unknown scenario $1" >&2; exit 2 ;;
    esac
}

# One wrk run; prints "rps p99_ms requests errors cpu_seconds".
run_wrk() {
    local target=$1 scenario=$2 args before after out
    args=$(scenario_args "$scenario" | sed "s/TLSPORT/${TLS_PORT[$target]}/; s/PORT/${PORT[$target]}/")
    before=$(cpu_ticks "${PROC[$target]}")
    # shellcheck disable=SC2086
    out=$(wrk -t "$WRK_THREADS" -d "${DURATION}s" --latency $args 2>&1)
    after=$(cpu_ticks "${PROC[$target]}")
    echo "$out" | awk -v cpu="$(( after - before ))" -v ticks="$TICKS" '
        function ms(v) {
            if (v ~ /us$/) return v / 1000;
            if (v ~ /ms$/) return v + 0;
            if (v ~ /s$/) return v * 1000;
            return v + 0;
        }
        /^ +99%/ { p99 = ms($2) }
        /requests in/ { reqs = $1 }
        /Requests\/sec/ { rps = $2 }
        /Socket errors/ { gsub(/,/, ""); errs += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx/ { errs += $5 }
        END { printf "%s %.2f %s %d %.2f\n", rps, p99, reqs, errs, cpu / ticks }'
}

median() { sort -g | awk '{v[NR] = $1} END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

RAW=$W/raw.txt
: > "$RAW"
echo "ringlb perf compare: $ROUNDS rounds x ${DURATION}s, $WORKERS workers, scenarios: $SCENARIOS" >&2
for round in $(seq "$ROUNDS"); do
    for scenario in $SCENARIOS; do
        # Alternate the order each round so no target always runs first.
        order=$TARGETS
        [ $((round % 2)) -eq 0 ] && order=$(echo "$TARGETS" | tr ' ' '\n' | tac | tr '\n' ' ')
        for target in $order; do
            # The origin serves plain HTTP only.
            [ "$scenario" = tls ] && [ -z "${TLS_PORT[$target]}" ] && continue
            line=$(run_wrk "$target" "$scenario")
            echo "$scenario $target $line" >> "$RAW"
            echo "  round $round $scenario $target: $line" >&2
        done
    done
done

# Per scenario and target: median req/s, median p99, requests per CPU-second
# (all rounds' requests over all rounds' CPU time), total errors.
TABLE=$W/table.md
{
    echo "| scenario | target | req/s (median) | p99 ms (median) | req per CPU-s | errors | ringlb/nginx req/s | ringlb/HAProxy req/s | ringlb/nginx req per CPU-s | ringlb/HAProxy req per CPU-s |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for scenario in $SCENARIOS; do
        declare -A RPS=() EFF=()
        for target in $TARGETS; do
            [ "$scenario" = tls ] && [ -z "${TLS_PORT[$target]}" ] && continue
            rps=$(awk -v s="$scenario" -v t="$target" '$1 == s && $2 == t { print $3 }' "$RAW" | median)
            p99=$(awk -v s="$scenario" -v t="$target" '$1 == s && $2 == t { print $4 }' "$RAW" | median)
            read -r reqs errs cpu < <(awk -v s="$scenario" -v t="$target" '$1 == s && $2 == t { r += $5; e += $6; c += $7 } END { print r + 0, e + 0, c + 0 }' "$RAW")
            if [ "$target" = origin ]; then eff="-"; else eff=$(awk -v r="$reqs" -v c="$cpu" 'BEGIN { if (c > 0) printf "%.0f", r / c; else print "-" }'); fi
            RPS[$target]=$rps; EFF[$target]=$eff
            ratios="| | | |"
            if [ "$target" = ringlb ]; then
                ratios=$(awk -v r="${RPS[ringlb]}" -v n="${RPS[nginx]}" -v h="${RPS[haproxy]}" -v er="${EFF[ringlb]}" -v en="${EFF[nginx]}" -v eh="${EFF[haproxy]}" '
                    function q(a, b) { return (b > 0) ? sprintf("%.2f", a / b) : "-" }
                    BEGIN { printf "%s | %s | %s | %s |", q(r, n), q(r, h), q(er, en), q(er, eh) }')
                echo "| $scenario | $target | $rps | $p99 | $eff | $errs | $ratios"
            else
                echo "| $scenario | $target | $rps | $p99 | $eff | $errs | | | | |"
            fi
        done
        unset RPS EFF
    done
} > "$TABLE"

cat "$TABLE"

if [ "$RECORD" = 1 ]; then
    RESULTS=$ROOT/perf/RESULTS.md
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo " (uncommitted changes)" || true)
    entry=$W/entry.md
    {
        echo "## $(date -u +%Y-%m-%dT%H:%MZ), commit $commit$dirty"
        echo
        echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')."
        echo "Run: $ROUNDS alternating rounds x ${DURATION}s per target and scenario, $WORKERS workers per proxy, wrk -t$WRK_THREADS on the same machine."
        echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), HAProxy $(haproxy -v | head -1 | awk '{print $3}'), wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')."
        echo
        cat "$TABLE"
        echo
    } > "$entry"
    if [ -f "$RESULTS" ]; then
        # Keep the header (up to the first entry), insert the new entry, then the old ones.
        awk -v entry="$entry" '
            !done && /^## / { while ((getline l < entry) > 0) print l; done = 1 }
            { print }
            END { if (!done) while ((getline l < entry) > 0) print l }' "$RESULTS" > "$W/results.new"
        mv "$W/results.new" "$RESULTS"
    else
        { echo "# perf results"; echo; echo "Newest first. Never edit old entries."; echo; cat "$entry"; } > "$RESULTS"
    fi
    echo "recorded in $RESULTS" >&2
fi
