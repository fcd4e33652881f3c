#!/usr/bin/env bash
# Benchmark of the gateway's REST pass-through against the service itself and
# against nginx, with wrk, in one run:
#
#   GET /api/v1/users/me with a valid access token, measured
#     1. through the gateway   (JWT verified against the user service's JWKS,
#                               rate limit checked, request id, CORS,
#                               compression, resilience stack, then proxied)
#     2. directly at the user service (the gateway's `x-user-id` set by hand)
#     3. through nginx, a plain reverse proxy in front of the user service
#                              (upstream keepalive, HTTP/1.1 to the upstream,
#                               no access log: a fair, well-configured nginx)
#     4. through `bare`, the floor: the gateway's HTTP stack alone (hyper's
#                              server, hyper-util's pooled client, tokio,
#                              mimalloc) as a proxy with none of its features
#                              (services/gateway/examples/bare_proxy.rs)
#
# The route reads the profile from Postgres, so every variant includes the
# same user-service work; the differences are what each proxy adds.
#
# It installs wrk and nginx (Debian packages) when missing, builds the release
# binaries of the gateway and the user service, starts the infrastructure
# (scripts/infra-up.sh), then the user service and the gateway on ports of
# their own (so a `make dev` stack may keep running), registers a user and
# logs in through the gateway. Only these two services take part in the
# route; the others would sit idle.
#
# The gateway runs as an operator would run it: its default log filter
# (`info,sqlx=warn`: no line per request, but the server span and the client
# span per upstream attempt are created, as they are in production) and no
# OTLP exporter (`OTEL_TRACES_EXPORTER=none`: nothing the proxies compared
# with does that work either).
# The user service logs at warn in every variant (it is the same work under
# each proxy), and nginx runs without an access log.
#
# Every proxy is warmed up first, then measured for BENCH_DURATION, the four
# one after the other (nginx and the gateway taking turns to go first),
# BENCH_ROUNDS times. For the three proxies, the CPU time their
# processes used during each measured run is divided by the requests served:
# the proxy's own cost per request, much steadier than throughput when the
# machine is busy with other work. The user service's CPU per request is
# reported alike, to show each proxy is compared on the same upstream work.
# A summary table (medians over the rounds, and the gateway/nginx ratio of
# each round) is printed and written to $CARGO_TARGET_DIR/bench-gateway.md.
#
# Usage: scripts/bench-gateway.sh [-h|--help]
#
# Environment (all optional):
#   BENCH_DURATION      measured run per target          (default 20s)
#   BENCH_WARMUP        warm-up run per target           (default 5s, first
#                       round only)
#   BENCH_ROUNDS        rounds of the four measurements  (default 1; on a
#                       busy machine 3 or more, and compare the ratios)
#   BENCH_CONNECTIONS   wrk connections                  (default 32)
#   BENCH_THREADS       wrk threads                      (default 1; the machine's
#                       cores are shared by wrk, the proxy, the user service
#                       and Postgres)
#   BENCH_PORT_BASE     first of the ports used          (default 19080)
#   BENCH_GATEWAY_LOG   the gateway's RUST_LOG           (default: unset, the
#                       gateway's own default)
#   BENCH_PROFILE       1: also record the gateway with `perf` during an
#                       extra run and print its hottest symbols
#   BENCH_SKIP_BUILD    1: use the release binaries as they are
#   CARGO_TARGET_DIR    where the binaries are built     (default target)
set -euo pipefail
export OTEL_TRACES_EXPORTER=none

case "${1:-}" in
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
  "") ;;
  *)
    echo "bench-gateway: unknown argument: $1 (try --help)" >&2
    exit 2
    ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${BENCH_DURATION:-20s}
WARMUP=${BENCH_WARMUP:-5s}
ROUNDS=${BENCH_ROUNDS:-1}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-1}
BASE=${BENCH_PORT_BASE:-19080}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN_DIR=$TARGET_DIR/release

GATEWAY_HTTP=$BASE
GATEWAY_GRPC=$((BASE + 1))
USER_HTTP=$((BASE + 2))
USER_GRPC=$((BASE + 3))
NGINX_HTTP=$((BASE + 4))
BARE_HTTP=$((BASE + 5))

section() { printf '\n==> %s\n' "$*"; }
fail() {
  echo "bench-gateway: $*" >&2
  exit 1
}
as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || fail "BENCH_ROUNDS must be a positive whole number, not $ROUNDS"

# ------------------------------------------------------------------ tools

section "tools"
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v jq >/dev/null 2>&1 || missing+=(jq)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
echo "wrk: $(wrk --version 2>&1 | head -n 1)"
echo "nginx: $("$NGINX" -v 2>&1)"

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  section "release build (gateway, user, the bare proxy)"
  cargo build --release --bins -p gateway -p user
  cargo build --release -p gateway --example bare_proxy
fi
for bin in gateway user examples/bare_proxy; do
  [[ -x $BIN_DIR/$bin ]] || fail "$BIN_DIR/$bin not found (build it, or unset BENCH_SKIP_BUILD)"
done

section "infrastructure"
scripts/infra-up.sh

for port in $GATEWAY_HTTP $GATEWAY_GRPC $USER_HTTP $USER_GRPC $NGINX_HTTP $BARE_HTTP; do
  if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
    fail "port $port is taken (set BENCH_PORT_BASE to another range)"
  fi
done

# ---------------------------------------------------------------- services

WORK=$(mktemp -d -t bench-gateway.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  if [[ -f $WORK/nginx.pid ]]; then
    "$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -s quit 2>/dev/null || true
  fi
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  echo "logs: $WORK"
}
trap cleanup EXIT

wait_ready() {
  local name=$1 url=$2
  for _ in $(seq 300); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.2
  done
  tail -n 20 "$WORK/$name.log" >&2 || true
  fail "$name is not ready at $url"
}

section "user service on :$USER_HTTP, gateway on :$GATEWAY_HTTP"
# The user service logs at warn: it is the same work under every proxy. The
# gateway keeps its default filter (see the top of this file).
env DATABASE_URL="postgres://postgres@127.0.0.1:5432/ferrishop_bench_users" \
  HTTP_ADDR="127.0.0.1:$USER_HTTP" GRPC_ADDR="127.0.0.1:$USER_GRPC" \
  USER_EVENTS_TOPIC=ferrishop.bench.user.events RUST_LOG=warn \
  "$BIN_DIR/user" >"$WORK/user.log" 2>&1 &
USER_PID=$!
PIDS+=("$USER_PID")
wait_ready user "http://127.0.0.1:$USER_HTTP/readyz"

# The user's own limit is lifted (the limiter still runs on every request):
# at the default 100/s the benchmark would measure the limiter's refusals.
gateway_env=(-u RUST_LOG)
if [[ -n ${BENCH_GATEWAY_LOG:-} ]]; then
  gateway_env+=(RUST_LOG="$BENCH_GATEWAY_LOG")
fi
env "${gateway_env[@]}" \
  HTTP_ADDR="127.0.0.1:$GATEWAY_HTTP" GRPC_ADDR="127.0.0.1:$GATEWAY_GRPC" \
  USER_URL="http://127.0.0.1:$USER_HTTP" USER_GRPC_URL="http://127.0.0.1:$USER_GRPC" \
  RATE_LIMIT_USER_PER_SECOND=1000000 RATE_LIMIT_USER_BURST=1000000 \
  "$BIN_DIR/gateway" >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
wait_ready gateway "http://127.0.0.1:$GATEWAY_HTTP/readyz"

section "bare proxy on :$BARE_HTTP"
"$BIN_DIR/examples/bare_proxy" "127.0.0.1:$BARE_HTTP" "http://127.0.0.1:$USER_HTTP" \
  >"$WORK/bare.log" 2>&1 &
BARE_PID=$!
PIDS+=("$BARE_PID")
wait_ready bare "http://127.0.0.1:$BARE_HTTP/readyz"

section "nginx on :$NGINX_HTTP"
mkdir -p "$WORK/logs"
cat >"$WORK/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log warn;
events {
    worker_connections 4096;
    multi_accept on;
}
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    upstream user_service {
        server 127.0.0.1:$USER_HTTP;
        keepalive 128;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$NGINX_HTTP reuseport backlog=4096;
        location / {
            proxy_pass http://user_service;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_buffering on;
        }
    }
}
EOF
as_root "$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -t 2>&1 | tail -n 1
as_root "$NGINX" -p "$WORK" -c "$WORK/nginx.conf"
wait_ready nginx "http://127.0.0.1:$NGINX_HTTP/readyz"

# --------------------------------------------------------------- the user

section "a user and their token"
EMAIL="bench-$(date +%s)-$$@example.com"
PASSWORD=correct-horse-battery-staple
curl -fsS -o /dev/null -X POST -H 'content-type: application/json' \
  --data "$(jq -nc --arg e "$EMAIL" --arg p "$PASSWORD" '{email: $e, password: $p, name: "Bench"}')" \
  "http://127.0.0.1:$GATEWAY_HTTP/api/v1/users"
TOKEN=$(curl -fsS -X POST -H 'content-type: application/json' \
  --data "$(jq -nc --arg e "$EMAIL" --arg p "$PASSWORD" '{email: $e, password: $p}')" \
  "http://127.0.0.1:$GATEWAY_HTTP/api/v1/auth/login" | jq -r .access_token)
[[ -n $TOKEN && $TOKEN != null ]] || fail "no access token"
# The gateway may still be fetching the user service's keys (503 until then).
USER_ID=
for _ in $(seq 100); do
  USER_ID=$(curl -fsS -H "authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$GATEWAY_HTTP/api/v1/users/me" 2>/dev/null | jq -r .id) && break
  sleep 0.2
done
[[ -n $USER_ID && $USER_ID != null ]] || fail "the gateway does not accept the token"
echo "user $USER_ID ($EMAIL)"

# The same request, answered 200 by each target, before measuring.
check() {
  local name=$1 url=$2
  shift 2
  local status
  status=$(curl -sS -o /dev/null -w '%{http_code}' "$@" "$url")
  [[ $status == 200 ]] || fail "$name answered $status for $url"
}
ROUTE=/api/v1/users/me
check gateway "http://127.0.0.1:$GATEWAY_HTTP$ROUTE" -H "authorization: Bearer $TOKEN"
check direct "http://127.0.0.1:$USER_HTTP$ROUTE" -H "x-user-id: $USER_ID"
check nginx "http://127.0.0.1:$NGINX_HTTP$ROUTE" -H "x-user-id: $USER_ID"
check bare "http://127.0.0.1:$BARE_HTTP$ROUTE" -H "x-user-id: $USER_ID"

# --------------------------------------------------------------- measuring

# The processes of a proxy: the gateway, the bare proxy, or nginx's master
# and workers.
proxy_pids() {
  case $1 in
    gateway) echo "$GATEWAY_PID" ;;
    bare) echo "$BARE_PID" ;;
    nginx)
      local master
      master=$(cat "$WORK/nginx.pid")
      echo "$master" $(pgrep -P "$master")
      ;;
  esac
}

# CPU time (user + system, in clock ticks) the given processes have used.
cpu_ticks() {
  local pid total=0
  for pid in "$@"; do
    # The fields after "pid (comm) ": utime and stime are the 12th and 13th.
    total=$((total + $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# per_request TICKS WRK_OUTPUT: CPU clock ticks over the requests wrk served,
# in microseconds per request.
per_request() {
  awk -v ticks="$1" -v hz="$CLK_TCK" '/ requests in / {
    printf "%.1f", ticks * 1000000 / hz / $1 }' "$2"
}

# run NAME URL HEADER WARMUP: warm-up (unless WARMUP is 0), then the measured
# run; sets RPS, P50, P99, ERRORS, CPU_US (the proxy's CPU time per request,
# in microseconds; empty for direct) and USER_CPU_US (the user service's).
run() {
  local name=$1 url=$2 header=$3 warmup=$4 out=$WORK/wrk-$1-$round.txt
  local pids before after user_before user_after
  if [[ $warmup != 0 ]]; then
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$warmup" -H "$header" "$url" >/dev/null
  fi
  # shellcheck disable=SC2207 # pids are words
  pids=($(proxy_pids "$name"))
  ((${#pids[@]} == 0)) || before=$(cpu_ticks "${pids[@]}")
  user_before=$(cpu_ticks "$USER_PID")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "$header" "$url" >"$out"
  user_after=$(cpu_ticks "$USER_PID")
  ((${#pids[@]} == 0)) || after=$(cpu_ticks "${pids[@]}")
  sed 's/^/    /' "$out"
  USER_CPU_US=$(per_request $((user_after - user_before)) "$out")
  echo "    user service CPU: $USER_CPU_US us per request"
  CPU_US=
  if ((${#pids[@]})); then
    CPU_US=$(per_request $((after - before)) "$out")
    echo "    $name CPU: $CPU_US us per request"
  fi
  RPS=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  P50=$(awk '$1 == "50%" {print $2}' "$out")
  P99=$(awk '$1 == "99%" {print $2}' "$out")
  # Socket errors and non-2xx answers both count.
  ERRORS=$(awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' "$out")
}

# wrk prints latencies with their unit (us, ms, s): in microseconds.
micros() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v + 0 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 }
    else print v + 0 }'
}

# median of the numbers given as arguments
median() {
  printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Per target, one entry per round: requests/s, and p50/p99 in microseconds.
declare -A RESULT_RPS RESULT_P50 RESULT_P99 RESULT_ERRORS RESULT_CPU RESULT_USER_CPU
RATIOS=()
BARE_RATIOS=()
for round in $(seq "$ROUNDS"); do
  warmup=$WARMUP
  ((round == 1)) || warmup=0
  # nginx and the gateway swap places every other round, so that a load
  # that drifts during a run (the machine is shared) favours neither.
  order=(direct bare nginx gateway)
  ((round % 2)) || order=(direct bare gateway nginx)
  for target in "${order[@]}"; do
    case $target in
      gateway) url="http://127.0.0.1:$GATEWAY_HTTP$ROUTE" header="Authorization: Bearer $TOKEN" ;;
      direct) url="http://127.0.0.1:$USER_HTTP$ROUTE" header="x-user-id: $USER_ID" ;;
      nginx) url="http://127.0.0.1:$NGINX_HTTP$ROUTE" header="x-user-id: $USER_ID" ;;
      bare) url="http://127.0.0.1:$BARE_HTTP$ROUTE" header="x-user-id: $USER_ID" ;;
    esac
    section "round $round/$ROUNDS, $target: $url ($([[ $warmup == 0 ]] || echo "$warmup warm-up, then ")$DURATION, $CONNECTIONS connections, $THREADS thread(s))"
    run "$target" "$url" "$header" "$warmup"
    RESULT_RPS[$target]+="$RPS "
    RESULT_P50[$target]+="$(micros "$P50") "
    RESULT_P99[$target]+="$(micros "$P99") "
    RESULT_ERRORS[$target]=$((${RESULT_ERRORS[$target]:-0} + ERRORS))
    RESULT_CPU[$target]+="$CPU_US "
    RESULT_USER_CPU[$target]+="$USER_CPU_US "
    case $target in
      nginx) nginx_rps=$RPS ;;
      gateway) gateway_rps=$RPS ;;
      bare) bare_rps=$RPS ;;
    esac
  done
  RATIOS+=("$(awk -v g="$gateway_rps" -v n="$nginx_rps" 'BEGIN {printf "%.2f", g / n}')")
  BARE_RATIOS+=("$(awk -v b="$bare_rps" -v n="$nginx_rps" 'BEGIN {printf "%.2f", b / n}')")
done

if [[ ${BENCH_PROFILE:-0} == 1 ]]; then
  command -v perf >/dev/null 2>&1 || {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-perf
  }
  section "profile of the gateway (perf, $DURATION)"
  as_root perf record -F 999 -g -o "$WORK/perf.data" -p "$GATEWAY_PID" -- sleep "${DURATION%s}" \
    >"$WORK/perf-record.log" 2>&1 &
  perf_pid=$!
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$GATEWAY_HTTP$ROUTE" >/dev/null
  wait "$perf_pid" || true
  as_root perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio -g none \
    2>/dev/null | grep -E '^ +[0-9.]+%' | tr -s ' ' | cut -d' ' -f2- >"$WORK/perf-symbols.txt" || true
  head -n 20 "$WORK/perf-symbols.txt"
  # The same samples by what they are spent on.
  share() { grep -Ei "$1" "$WORK/perf-symbols.txt" | awk '{s += $1} END {printf "%.1f%%", s}'; }
  echo "by area:"
  echo "  Ed25519 signature checks (JWT)   $(share 'ed25519|edwards25519|curve25519')"
  echo "  allocator and memcpy             $(share 'malloc|free|memmove|memcpy|realloc')"
  echo "  kernel (TCP, both sides)         $(share '\[k\]')"
  echo "  hyper / h2                       $(share 'hyper|h2::')"
  echo "  reqwest                          $(share 'reqwest')"
  echo "  serde / JSON                     $(share 'serde|json')"
  echo "  rate limiter (governor)          $(share 'governor')"
  echo "  tracing / OpenTelemetry          $(share 'tracing|opentelemetry')"
  echo "  metrics                          $(share 'metrics')"
  echo "  axum / tower layers              $(share 'axum|tower')"
  echo "  tokio runtime                    $(share 'tokio::runtime|tokio::sync')"
fi

# ----------------------------------------------------------------- summary

declare -A MED_RPS MED_P50 MED_P99 MED_CPU MED_USER_CPU
for target in direct nginx bare gateway; do
  # shellcheck disable=SC2086
  [[ -z ${RESULT_CPU[$target]// /} ]] || MED_CPU[$target]=$(median ${RESULT_CPU[$target]})
  # shellcheck disable=SC2086
  MED_USER_CPU[$target]=$(median ${RESULT_USER_CPU[$target]})
  # shellcheck disable=SC2086 # the per-round lists split on purpose
  MED_RPS[$target]=$(median ${RESULT_RPS[$target]})
  # shellcheck disable=SC2086
  MED_P50[$target]=$(median ${RESULT_P50[$target]})
  # shellcheck disable=SC2086
  MED_P99[$target]=$(median ${RESULT_P99[$target]})
done
ms() { awk -v us="$1" 'BEGIN {printf "%.2f ms", us / 1000}'; }
SUMMARY=$WORK/summary.md
{
  echo "GET $ROUTE, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS round(s) ($(nproc) cores, $(date -u +%Y-%m-%d))"
  echo
  if ((ROUNDS > 1)); then
    echo "Medians over the rounds."
    echo
  fi
  echo "| target | requests/s | p50 | p99 | proxy CPU per request | user service CPU per request | errors |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for target in direct nginx bare gateway; do
    cpu=-
    [[ -z ${MED_CPU[$target]:-} ]] || cpu="$(printf '%.1f' "${MED_CPU[$target]}") µs"
    printf '| %s | %.0f | %s | %s | %s | %.1f µs | %s |\n' "$target" "${MED_RPS[$target]}" \
      "$(ms "${MED_P50[$target]}")" "$(ms "${MED_P99[$target]}")" "$cpu" \
      "${MED_USER_CPU[$target]}" "${RESULT_ERRORS[$target]}"
  done
  echo
  awk -v d="${MED_RPS[direct]}" -v g="${MED_RPS[gateway]}" \
    -v dp50="${MED_P50[direct]}" -v gp50="${MED_P50[gateway]}" \
    -v dp99="${MED_P99[direct]}" -v gp99="${MED_P99[gateway]}" 'BEGIN {
      printf "- gateway overhead over direct: %+.0f us at p50, %+.0f us at p99; throughput %.0f%% of direct\n", gp50 - dp50, gp99 - dp99, 100 * g / d
    }'
  awk -v g="${MED_CPU[gateway]}" -v n="${MED_CPU[nginx]}" -v b="${MED_CPU[bare]}" 'BEGIN {
      printf "- proxy CPU per request (the proxy'"'"'s processes, user + system time): gateway %.1f µs, nginx %.1f µs (%.2fx), bare %.1f µs (%.2fx)\n", g, n, g / n, b, b / n
    }'
  awk -v r="$(median "${BARE_RATIOS[@]}")" -v all="${BARE_RATIOS[*]}" -v rounds="$ROUNDS" 'BEGIN {
      printf "- bare proxy (the floor) throughput relative to nginx: %.2fx%s\n", r,
        (rounds > 1 ? " (median; rounds: " all ")" : "")
    }'
  ratio=$(median "${RATIOS[@]}")
  awk -v r="$ratio" -v all="${RATIOS[*]}" -v rounds="$ROUNDS" 'BEGIN {
      printf "- gateway throughput relative to nginx: %.2fx%s (%s)\n", r,
        (rounds > 1 ? " (median; rounds: " all ")" : ""), (r >= 1 ? "goal met: >= nginx" : "below nginx")
    }'
} >"$SUMMARY"
section "summary"
cat "$SUMMARY"
cp "$SUMMARY" "$TARGET_DIR/bench-gateway.md" 2>/dev/null || true
