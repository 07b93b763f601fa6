#!/usr/bin/env bash
# Side-by-side wrk comparison of ringlb, nginx and HAProxy as reverse
# proxies in front of the same nginx origin, with the reference configs in
# ../shared/bench/. Rounds alternate between targets so that drift on a
# shared machine hits every target alike; quote the ratios, not absolutes.
# ../shared/bench/uring-limit, a featureless io_uring proxy that shows this
# machine's limit, runs as a fourth proxy ("limit") in the same rounds.
#
# Usage: perf/compare.sh [--rounds N] [--duration SECONDS] [--workers N]
#                        [--scenarios "idle small big close many tls gzip tcp tcp-big gateway cached cached-big"] [--record]
#   --record  append the table to perf/RESULTS.md (newest first)
#   RINGLB_BIN=PATH  measure that ringlb binary instead of target/release/ringlb
#   RINGLB_ALSO="NAME=PATH ..."  more ringlb builds as targets "ringlb-NAME"
#                    in the same rounds (an A/B of a change; plain HTTP, and
#                    the tcp scenarios on a [[tcp]] listener of their own)
#   IDLE_CONNS=N     connections in the idle scenario (default 10000)
#   IDLE_PATH=/big   what each idle connection fetches first (default /small;
#                    /big: 64 KiB, the memory-comes-back case of issue 10)
#   NGINX_STREAM_MODULE=PATH  nginx's stream module for the tcp scenarios
#                    (default /usr/lib/nginx/modules/ngx_stream_module.so)
#
# Scenarios: small (keep-alive, 12 B), big (64 KiB), close (a new connection
# per request), many (1,000 connections), tls (keep-alive over TLS; the limit
# has no TLS), idle (memory: IDLE_CONNS keep-alive connections that each made
# one request and then sit idle; the RSS growth per connection while they are
# open, and how much of it remains after they close), gateway (keep-alive,
# 12 B, through a route that strips a prefix, makes 3 request header
# changes and answers CORS; nginx and HAProxy are configured for the same
# work; not in the default list, and the route is configured only when it
# is asked for, so the other scenarios run with the features off),
# cached and cached-big (keep-alive, 12 B and 64 KiB, through a response
# cache with a 60 s TTL: ringlb's cache, nginx's proxy_cache, HAProxy's
# cache; the limit has no cache and forwards every request),
# gzip (keep-alive, a
# 64 KiB JSON body compressed by the proxy with gzip at level 5, for clients
# sending Accept-Encoding: gzip: ringlb `compress` on a /gz/ route, nginx
# `gzip on` with `gzip_comp_level 5`, HAProxy `compression algo gzip`, whose
# libslz has no levels (about zlib's level 1); the origin and the limit
# cannot compress and sit it out),
# tcp and tcp-big (L4: keep-alive HTTP, 12 B and 64 KiB, relayed as raw
# bytes without parsing: ringlb `[[tcp]]` on 17032, nginx `stream {}` on
# 17012, HAProxy `mode tcp` on 17022, each to the origin, with a 30 s idle
# timeout and no logging; the limit relays on its usual port and the origin
# is measured directly; the listeners are configured only when a tcp
# scenario is asked for, so an older ringlb without `[[tcp]]` can still run
# the others).
#
# Needs: nginx, haproxy, wrk (Debian: apt-get install -y nginx haproxy wrk),
# python3 (the idle scenario's client), and a release build of ringlb (built
# here if missing). Installs nothing. Where a proxy has io_uring kernel
# workers (iou-wrk threads) at the end of a round, their count and CPU are
# reported under the table.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH_CONFIGS:-$ROOT/../shared/bench}
ROUNDS=3
DURATION=10
WORKERS=$(nproc)
# idle first: its first round then meets fresh processes (see its table).
SCENARIOS="idle small big close many tls gzip tcp"
RECORD=0
WRK_THREADS=${WRK_THREADS:-2}

while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --record) RECORD=1; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
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

RINGLB=${RINGLB_BIN:-$ROOT/target/release/ringlb}
if [ -z "${RINGLB_BIN:-}" ] && { [ ! -x "$RINGLB" ] || [ -n "$(find "$ROOT/src" -newer "$RINGLB" -name '*.rs' | head -1)" ]; }; then
    (cd "$ROOT" && cargo build --release --quiet)
fi
LIMIT=$BENCH/uring-limit
[ -x "$LIMIT" ] || { echo "the limit proxy $LIMIT is missing" >&2; exit 1; }
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_PATH=${IDLE_PATH:-/small}

W=$(mktemp -d /tmp/ringlb-perf.XXXXXX)
# nginx workers may run as an unprivileged user: they must read www/.
chmod 755 "$W"
mkdir -p "$W/www" "$W/logs"
printf 'hello world\n' > "$W/www/small"                 # 12 bytes
head -c 65536 /dev/zero | tr '\0' 'x' > "$W/www/big"   # 64 KiB
# The gzip scenario's body: 64 KiB of API-like JSON (served as text/plain:
# the origin has no MIME map), the same records as benches/compress.rs.
mkdir -p "$W/www/gz"
python3 - "$W/www/gz/json" <<'PY'
import sys
parts, i, size = ["["], 0, 1
while size < 64 * 1024 - 200:
    rec = ('{"id":%d,"name":"user-%x","email":"user%d@example.com","score":%d,"active":%s,"tags":["t%d","t%d"]},'
           % (i, (i * 0x9E3779B9) % 2**64, i, (i * 7919) % 1000, "true" if i % 3 == 0 else "false", i % 17, i % 5))
    parts.append(rec); size += len(rec); i += 1
parts.append("{}]")
open(sys.argv[1], "w").write("".join(parts))
PY

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
# The gzip scenario: compression on /gz/ only, so the other scenarios run
# exactly the reference configs' paths.
sed -i 's#^\( *\)location / {.*}$#&\n\1location /gz/ { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; gzip on; gzip_comp_level 5; gzip_types text/plain; gzip_min_length 1024; gzip_proxied any; gzip_vary on; }#' "$W/proxy.nginx.conf"
sed -i 's#^\( *\)default_backend origin$#\1use_backend origin_gz if { path_beg /gz/ }\n&#' "$W/proxy.haproxy.cfg"
printf 'backend origin_gz\n    filter compression\n    compression algo gzip\n    compression type text/plain\n    server o1 127.0.0.1:17001\n' >> "$W/proxy.haproxy.cfg"
grep -q 'location /gz/' "$W/proxy.nginx.conf" && grep -q 'use_backend origin_gz' "$W/proxy.haproxy.cfg" || { echo "could not add the gzip location to the peer configs" >&2; exit 1; }
sed "s#@WORKERS@#$WORKERS#g; s#@CERT@#$ROOT/certs/server.pem#g; s#@KEY@#$ROOT/certs/server.key#g" \
    "$ROOT/perf/ringlb.bench.toml" > "$W/ringlb.toml"
# The gateway scenario: the same work in each proxy's own terms (the
# limit has no features and is sent to www/api/small, the same 12 bytes).
if [[ " $SCENARIOS " == *" gateway "* ]]; then
    mkdir -p "$W/www/api"
    cp "$W/www/small" "$W/www/api/small"
    cat "$ROOT/perf/gateway.ringlb.toml" >> "$W/ringlb.toml"
    sed -i "s#^http {#&\n    map \$http_origin \$cors_origin { \"https://app.example.com\" \$http_origin; default \"\"; }#" "$W/proxy.nginx.conf"
    sed -i "s#^        location / {#        include $ROOT/perf/gateway.nginx.conf;\n&#" "$W/proxy.nginx.conf"
    sed -i "s#^frontend fe#&\n    acl api path_beg /api/\n    http-request set-var(txn.origin) req.hdr(origin) if api\n    http-request set-path %[path,regsub(^/api,)] if api\n    http-request set-header X-Env bench if api\n    http-request add-header X-Via haproxy if api\n    http-request del-header X-Debug if api\n    http-response set-header Access-Control-Allow-Origin %[var(txn.origin)] if { var(txn.origin) -m str https://app.example.com }\n    http-response add-header Vary Origin if { var(txn.origin) -m found }#" "$W/proxy.haproxy.cfg"
    grep -q cors_origin "$W/proxy.nginx.conf" && grep -q gateway.nginx.conf "$W/proxy.nginx.conf" && grep -q "acl api" "$W/proxy.haproxy.cfg" \
        || { echo "could not add the gateway route to the peer configs" >&2; exit 1; }
fi
# The cached scenarios: each proxy's own response cache, 60 s TTL.
if [[ " $SCENARIOS " == *" cached"* ]]; then
    mkdir -p "$W/www/cached" "$W/nginx-cache"
    cp "$W/www/small" "$W/www/big" "$W/www/cached/"
    cat "$ROOT/perf/cached.ringlb.toml" >> "$W/ringlb.toml"
    sed -i "s#^http {#&\n    proxy_cache_path $W/nginx-cache levels=1:2 keys_zone=main:16m max_size=256m inactive=10m use_temp_path=off;#" "$W/proxy.nginx.conf"
    sed -i "s#^        location / {#        include $ROOT/perf/cached.nginx.conf;\n&#" "$W/proxy.nginx.conf"
    sed -i "s#^frontend fe#cache main\n    total-max-size 256\n    max-object-size 1048576\n    max-age 60\n&\n    acl cached path_beg /cached/\n    http-request set-path %[path,regsub(^/cached,)] if cached\n    http-request cache-use main if cached\n    http-response cache-store main#" "$W/proxy.haproxy.cfg"
    grep -q keys_zone=main "$W/proxy.nginx.conf" && grep -q "cache-use main" "$W/proxy.haproxy.cfg" \
        || { echo "could not add the cache to the peer configs" >&2; exit 1; }
fi
cat >> "$W/ringlb.toml" <<'TOML'

# The gzip scenario (added by compare.sh): as nginx's location /gz/.
[[routes]]
path_prefix = "/gz/"
upstream = "origin"
compress = { algorithms = ["gzip"], types = ["text/plain"], min_length = 1024, level = { gzip = 5 } }
TOML
# The tcp scenarios: an L4 listener in each proxy that relays raw bytes to
# the origin, with the same timeouts (5 s connect, 30 s idle; ringlb's
# connect_timeout is the origin upstream's 3 s default) and no logging.
TCP=0
[[ " $SCENARIOS " == *" tcp "* || " $SCENARIOS " == *" tcp-big "* ]] && TCP=1
if [ "$TCP" = 1 ]; then
    cat >> "$W/ringlb.toml" <<'TOML'

# The tcp scenarios (added by compare.sh when they run): raw TCP to the origin.
[[tcp]]
listen = "127.0.0.1:17032"
upstream = "origin"
idle_timeout = "30s"
TOML
    # Debian builds nginx's stream module as a dynamic module.
    if nginx -V 2>&1 | grep -qE -- '--with-stream( |$)'; then
        :   # built in
    else
        NGINX_STREAM_MODULE=${NGINX_STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}
        [ -f "$NGINX_STREAM_MODULE" ] || {
            echo "the tcp scenarios need nginx's stream module, $NGINX_STREAM_MODULE is missing (Debian/Ubuntu: apt-get install -y libnginx-mod-stream, or set NGINX_STREAM_MODULE)" >&2
            exit 1
        }
        sed -i "1i load_module $NGINX_STREAM_MODULE;" "$W/proxy.nginx.conf"
    fi
    cat >> "$W/proxy.nginx.conf" <<'NGINX'
# The tcp scenarios (added by compare.sh): raw TCP to the origin.
stream {
    access_log off;
    server {
        listen 127.0.0.1:17012 reuseport backlog=4096;
        proxy_pass 127.0.0.1:17001;
        proxy_connect_timeout 5s;
        proxy_timeout 30s;
    }
}
NGINX
    # Its timeouts are the defaults section's: connect 5s, client and server 30s.
    printf 'listen tcp\n    mode tcp\n    bind 127.0.0.1:17022\n    server o1 127.0.0.1:17001\n' >> "$W/proxy.haproxy.cfg"
fi

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

nginx -c "$W/origin.nginx.conf" -g 'daemon off;' & PIDS+=($!)
nginx -c "$W/proxy.nginx.conf" -g 'daemon off;' & PIDS+=($!); NGINX_PID=$!
haproxy -f "$W/proxy.haproxy.cfg" -db >"$W/logs/haproxy.out" 2>&1 & PIDS+=($!); HAPROXY_PID=$!
"$RINGLB" --config "$W/ringlb.toml" 2>"$W/logs/ringlb.err" & PIDS+=($!); RINGLB_PID=$!
# The limit's settings as its README gives them.
RB_SHARED=1 RB_BUF=65536 RB_NBUF=1024 "$LIMIT" --listen 127.0.0.1:17040 --backend 127.0.0.1:17001 \
    --workers "$WORKERS" >"$W/logs/limit.out" 2>&1 & PIDS+=($!); LIMIT_PID=$!

declare -A PORT=([origin]=17001 [nginx]=17010 [haproxy]=17020 [ringlb]=17030 [limit]=17040)
declare -A TLS_PORT=([origin]="" [nginx]=17011 [haproxy]=17021 [ringlb]=17031 [limit]="")
declare -A PROC=([origin]="" [nginx]=$NGINX_PID [haproxy]=$HAPROXY_PID [ringlb]=$RINGLB_PID [limit]=$LIMIT_PID)
# The tcp scenarios' ports: the limit relays bytes on its one port, and the
# origin is measured directly.
declare -A TCP_PORT=([origin]=17001 [nginx]=17012 [haproxy]=17022 [ringlb]=17032 [limit]=17040)
[ "$TCP" = 1 ] || TCP_PORT=([origin]="" [nginx]="" [haproxy]="" [ringlb]="" [limit]="")
TARGETS="origin nginx haproxy ringlb limit"
port=17050
for also in ${RINGLB_ALSO:-}; do
    name=ringlb-${also%%=*}
    tcp_port=$((port + 100))
    sed "s#127.0.0.1:17030#127.0.0.1:$port#; s#, { addr = \"127.0.0.1:17031\".*\]#]#; s#^listen = \"127.0.0.1:17032\"#listen = \"127.0.0.1:$tcp_port\"#" \
        "$W/ringlb.toml" > "$W/$name.toml"
    # ringlb's listeners set SO_REUSEPORT: a port left as it was would be
    # shared with ringlb without an error, and both measured as one.
    if grep -q '127\.0\.0\.1:1703[0-9]' "$W/$name.toml"; then
        echo "could not move $name off ringlb's ports: $(grep -n '127\.0\.0\.1:1703[0-9]' "$W/$name.toml")" >&2
        exit 1
    fi
    "${also#*=}" --config "$W/$name.toml" 2>"$W/logs/$name.err" & PIDS+=($!)
    PORT[$name]=$port; TLS_PORT[$name]=""; PROC[$name]=$!
    TCP_PORT[$name]=""; [ "$TCP" = 1 ] && TCP_PORT[$name]=$tcp_port
    TARGETS="$TARGETS $name"
    port=$((port + 1))
done

printf 'wrk.headers["Accept-Encoding"] = "gzip"\n' > "$W/accept-gzip.lua"
printf 'wrk.headers["Origin"] = "https://app.example.com"\n' > "$W/origin.lua"
printf 'wrk.headers["Connection"] = "close"\n' > "$W/connection-close.lua"
# The origin and the limit cannot compress: they sit the gzip scenario out.
gzip_sits_out() { [ "$1" = origin ] || [ "$1" = limit ]; }
# A target without a port for the scenario (TLS, TCP) sits it out.
sits_out() {
    case "$2" in
        tls) [ -z "${TLS_PORT[$1]}" ] ;;
        tcp|tcp-big) [ -z "${TCP_PORT[$1]}" ] ;;
        gzip) gzip_sits_out "$1" ;;
        *) return 1 ;;
    esac
}

# Waits up to 5 s for a target to answer /small on a port.
answers_small() {
    for _ in $(seq 50); do
        curl -fs -o /dev/null "http://127.0.0.1:$1/small" && return 0
        sleep 0.1
    done
    curl -fs -o /dev/null "http://127.0.0.1:$1/small"
}
for t in $TARGETS; do
    answers_small "${PORT[$t]}" || { echo "$t did not come up" >&2; exit 1; }
    if [ -n "${TCP_PORT[$t]}" ]; then
        answers_small "${TCP_PORT[$t]}" || { echo "$t does not relay TCP on 127.0.0.1:${TCP_PORT[$t]} (GET /small through it failed)" >&2; exit 1; }
    fi
done
# The gzip scenario measures compression only if every proxy compresses.
if [[ " $SCENARIOS " == *" gzip "* ]]; then
    for t in $TARGETS; do
        gzip_sits_out "$t" && continue
        curl -fs -H 'Accept-Encoding: gzip' -D - -o "$W/gz.out" "http://127.0.0.1:${PORT[$t]}/gz/json" \
            | grep -qi '^content-encoding: gzip' && gzip -t < "$W/gz.out" \
            || { echo "$t does not answer /gz/json with gzip" >&2; exit 1; }
    done
fi

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

# io_uring's kernel worker threads (iou-wrk, made for ops the kernel cannot
# complete inline, such as splice) of a process and its children: "COUNT
# TICKS", the threads alive now and their CPU. Their CPU is in the
# process's own figure already (cpu_ticks); this shows how much of it
# they took.
iou_wrk() {
    local root=$1 count=0 ticks=0 pid task
    [ -n "$root" ] || { echo "0 0"; return; }
    for pid in $root $(pgrep -P "$root" || true); do
        for task in /proc/"$pid"/task/*; do
            case "$(cat "$task/comm" 2>/dev/null)" in
                iou-wrk*)
                    count=$((count + 1))
                    ticks=$((ticks + $(awk '{print $14 + $15}' "$task/stat" 2>/dev/null || echo 0)))
                    ;;
            esac
        done
    done
    echo "$count $ticks"
}

scenario_args() {
    case "$1" in
        small) echo "-c 64 http://127.0.0.1:PORT/small" ;;
        big) echo "-c 64 http://127.0.0.1:PORT/big" ;;
        many) echo "-c 1000 http://127.0.0.1:PORT/small" ;;
        tls) echo "-c 64 https://127.0.0.1:TLSPORT/small" ;;
        # wrk drops a -H header without a space after the colon, and these
        # arguments are split at spaces: headers come from scripts.
        close) echo "-c 64 -s $W/connection-close.lua http://127.0.0.1:PORT/small" ;;
        gateway) echo "-c 64 -s $W/origin.lua http://127.0.0.1:PORT/api/small" ;;
        cached) echo "-c 64 http://127.0.0.1:PORT/cached/small" ;;
        cached-big) echo "-c 64 http://127.0.0.1:PORT/cached/big" ;;
        gzip) echo "-c 64 -s $W/accept-gzip.lua http://127.0.0.1:PORT/gz/json" ;;
        tcp) echo "-c 64 http://127.0.0.1:TCPPORT/small" ;;
        tcp-big) echo "-c 64 http://127.0.0.1:TCPPORT/big" ;;
        *) echo "unknown scenario $1" >&2; exit 2 ;;
    esac
}

# Resident memory in KiB of a process and its children (nginx workers).
rss_kib() {
    local root=$1 total=0 pid
    for pid in $root $(pgrep -P "$root" || true); do
        if [ -r "/proc/$pid/status" ]; then
            total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
        fi
    done
    echo "$total"
}

# The idle scenario: opens N keep-alive connections, makes one request on
# each, holds them all open and idle, then closes them. Prints
# "opened before_kib open_kib after_kib" with the target's RSS before, while
# they are open (after a 3 s settle) and 3 s after they all closed.
declare -f rss_kib > "$W/rss.sh"
IDLE_CLIENT=$W/idle_client.py
cat > "$IDLE_CLIENT" <<'PY'
import asyncio, subprocess, sys
port, count, rss_cmd, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
def rss():
    return int(subprocess.run(["bash", "-c", rss_cmd], capture_output=True, text=True).stdout.strip() or 0)
async def request_once():
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await r.readexactly(length)
    return w
async def one(sem):
    # The bound starts once a place is free, so a slow machine does not
    # count queued connections as failed.
    async with sem:
        return await asyncio.wait_for(request_once(), 10)
async def main():
    before = rss()
    sem = asyncio.Semaphore(200)
    # A proxy that holds fewer connections (HAProxy's reference maxconn is
    # 8000) leaves the rest waiting: they count as failed after 10 s.
    results = await asyncio.gather(*(one(sem) for _ in range(count)), return_exceptions=True)
    writers = [w for w in results if not isinstance(w, BaseException)]
    # Longer than ringlb's 1 s idle grace, after which an idle connection
    # holds no buffers.
    await asyncio.sleep(3)
    during = rss()
    for w in writers:
        w.close()
    await asyncio.sleep(3)
    print(len(writers), before, during, rss())
asyncio.run(main())
PY

run_idle() {
    local target=$1 out opened before during after
    out=$(python3 "$IDLE_CLIENT" "${PORT[$target]}" "$IDLE_CONNS" "source $W/rss.sh; rss_kib ${PROC[$target]}" "$IDLE_PATH" 2>&1 | tail -1)
    read -r opened before during after <<<"$out"
    # "bytes_per_conn before_kib open_kib after_kib opened failed"
    awk -v o="${opened:-0}" -v b="${before:-0}" -v d="${during:-0}" -v a="${after:-0}" -v n="$IDLE_CONNS" 'BEGIN {
        per = (o > 0) ? (d - b) * 1024 / o : 0
        printf "%.0f %d %d %d %d %d\n", per, b, d, a, o, n - o }'
}

# One wrk run; prints "rps p99_ms requests errors cpu_seconds bytes_per_request".
run_wrk() {
    local target=$1 scenario=$2 args before after out
    args=$(scenario_args "$scenario" | sed "s/TLSPORT/${TLS_PORT[$target]}/; s/TCPPORT/${TCP_PORT[$target]}/; s/PORT/${PORT[$target]}/")
    before=$(cpu_ticks "${PROC[$target]}")
    # shellcheck disable=SC2086
    out=$(wrk -t "$WRK_THREADS" -d "${DURATION}s" --latency $args 2>&1)
    after=$(cpu_ticks "${PROC[$target]}")
    read -r iou_count iou_ticks < <(iou_wrk "${PROC[$target]}")
    if [ "$iou_count" -gt 0 ]; then
        echo "$scenario $target $iou_count $iou_ticks" >> "$IOU"
    fi
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
        /^Transfer\/sec/ {
            v = $2; u = v; sub(/^[0-9.]+/, "", u); v += 0
            xfer = v * (u == "KB" ? 1024 : u == "MB" ? 1048576 : u == "GB" ? 1073741824 : 1)
        }
        END { printf "%s %.2f %s %d %.2f %.0f\n", rps, p99, reqs, errs, cpu / ticks, (rps > 0) ? xfer / rps : 0 }'
}

median() { sort -g | awk '{v[NR] = $1} END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

RAW=$W/raw.txt
: > "$RAW"
IOU=$W/iou-wrk.txt
: > "$IOU"
echo "ringlb perf compare: $ROUNDS rounds x ${DURATION}s, $WORKERS workers, scenarios: $SCENARIOS" >&2
for round in $(seq "$ROUNDS"); do
    for scenario in $SCENARIOS; do
        # Alternate the order each round so no target always runs first.
        order=$TARGETS
        [ $((round % 2)) -eq 0 ] && order=$(echo "$TARGETS" | tr ' ' '\n' | tac | tr '\n' ' ')
        for target in $order; do
            sits_out "$target" "$scenario" && continue
            if [ "$scenario" = idle ]; then
                [ "$target" = origin ] && continue
                line=$(run_idle "$target")
            else
                line=$(run_wrk "$target" "$scenario")
                # Compressed, the 64 KiB body is about 12 KiB on the wire.
                if [ "$scenario" = gzip ] && [ "$(echo "$line" | awk '{print ($6 > 32768)}')" = 1 ]; then
                    echo "$target sent $(echo "$line" | awk '{print $6}') bytes per gzip request: not compressed" >&2
                    exit 1
                fi
            fi
            echo "$scenario $target $line" >> "$RAW"
            echo "  round $round $scenario $target: $line" >&2
        done
    done
done

# Per scenario and target: median req/s, median p99, requests per CPU-second
# (all rounds' requests over all rounds' CPU time), total errors; the ratios
# of ringlb to each peer and to the limit.
TABLE=$W/table.md
{
    echo "| scenario | target | req/s (median) | p99 ms (median) | req per CPU-s | errors | ringlb/nginx req/s | ringlb/HAProxy req/s | ringlb/nginx req per CPU-s | ringlb/HAProxy req per CPU-s | **ringlb/limit req per CPU-s** |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for scenario in $SCENARIOS; do
        [ "$scenario" = idle ] && continue
        declare -A RPS=() EFF=()
        for target in $TARGETS; do
            sits_out "$target" "$scenario" && continue
            rps=$(awk -v s="$scenario" -v t="$target" '$1 == s && $2 == t { print $3 }' "$RAW" | median)
            p99=$(awk -v s="$scenario" -v t="$target" '$1 == s && $2 == t { print $4 }' "$RAW" | median)
            read -r reqs errs cpu < <(awk -v s="$scenario" -v t="$target" '$1 == s && $2 == t { r += $5; e += $6; c += $7 } END { print r + 0, e + 0, c + 0 }' "$RAW")
            if [ "$target" = origin ]; then eff="-"; else eff=$(awk -v r="$reqs" -v c="$cpu" 'BEGIN { if (c > 0) printf "%.0f", r / c; else print "-" }'); fi
            RPS[$target]=$rps; EFF[$target]=$eff
        done
        for target in $TARGETS; do
            [ -n "${RPS[$target]:-}" ] || continue
            rps=$(awk -v s="$scenario" -v t="$target" '$1 == s && $2 == t { print $3 }' "$RAW" | median)
            p99=$(awk -v s="$scenario" -v t="$target" '$1 == s && $2 == t { print $4 }' "$RAW" | median)
            errs=$(awk -v s="$scenario" -v t="$target" '$1 == s && $2 == t { e += $6 } END { print e + 0 }' "$RAW")
            ratios="| | | | |"
            if [[ "$target" == ringlb* ]] || [ "$target" = limit ]; then
                ratios=$(awk -v r="${RPS[$target]}" -v n="${RPS[nginx]}" -v h="${RPS[haproxy]}" -v er="${EFF[$target]}" -v en="${EFF[nginx]}" -v eh="${EFF[haproxy]}" -v el="${EFF[limit]:-0}" -v t="$target" '
                    function q(a, b) { return (b > 0) ? sprintf("%.2f", a / b) : "-" }
                    BEGIN { printf "%s | %s | %s | %s | %s |", q(r, n), q(r, h), q(er, en), q(er, eh), (t ~ /^ringlb/) ? "**" q(er, el) "**" : "" }')
            fi
            echo "| $scenario | $target | ${RPS[$target]} | $p99 | ${EFF[$target]} | $errs | $ratios"
        done
        unset RPS EFF
    done
    if grep -q '^idle ' "$RAW"; then
        echo
        echo "Idle: $IDLE_CONNS keep-alive connections, one request each (GET $IDLE_PATH), then idle. RSS of the proxy (with its child processes), medians over the rounds."
        echo "Round 1 on its own: the first time each proxy holds that many connections, when idle ran first on fresh processes (the default order);"
        echo "later rounds find what an earlier round (or scenario) left allocated: nginx and HAProxy keep it, ringlb gives it back."
        echo
        echo "| target | bytes per idle connection | in round 1 | RSS before (KiB) | RSS with them open (KiB) | RSS 3 s after they closed (KiB) | after close vs before | failed connections |"
        echo "|---|---|---|---|---|---|---|---|"
        for target in $TARGETS; do
            grep -q "^idle $target " "$RAW" || continue
            per=$(awk -v t="$target" '$1 == "idle" && $2 == t { print $3 }' "$RAW" | median)
            first=$(awk -v t="$target" '$1 == "idle" && $2 == t { print $3; exit }' "$RAW")
            before=$(awk -v t="$target" '$1 == "idle" && $2 == t { print $4 }' "$RAW" | median)
            open=$(awk -v t="$target" '$1 == "idle" && $2 == t { print $5 }' "$RAW" | median)
            after=$(awk -v t="$target" '$1 == "idle" && $2 == t { print $6 }' "$RAW" | median)
            failed=$(awk -v t="$target" '$1 == "idle" && $2 == t { f += $8 } END { print f + 0 }' "$RAW")
            back=$(awk -v b="$before" -v a="$after" 'BEGIN { if (b > 0) printf "%+.0f%%", (a - b) * 100 / b; else print "-" }')
            echo "| $target | $per | $first | $before | $open | $after | $back | $failed |"
        done
    fi
    if [ -s "$IOU" ]; then
        echo
        echo "io_uring kernel workers (iou-wrk) alive at the end of a round, and their CPU (already counted in the proxy's req per CPU-s), summed over the rounds:"
        echo
        echo "| scenario | target | iou-wrk threads (max) | their CPU-s |"
        echo "|---|---|---|---|"
        awk -v ticks="$TICKS" '{ k = $1 " | " $2; if ($3 > n[k]) n[k] = $3; c[k] += $4 }
            END { for (k in n) printf "| %s | %d | %.2f |\n", k, n[k], c[k] / ticks }' "$IOU" | sort
    fi
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
