#!/usr/bin/env bash
# Run the whole shop locally: infrastructure, then the five services in the foreground.
#
#   scripts/infra-up.sh           Postgres, RabbitMQ, NATS, Kafka (tansu), started if needed
#   cargo build --bins            gateway user order payment inventory
#   user, inventory, payment, order, gateway   started with local defaults,
#                                 each output line prefixed with the service name
#
# Ctrl-C (or SIGTERM) stops every service and waits for them; if one service exits on
# its own, the others are stopped too. The infrastructure keeps running.
#
# Usage: scripts/dev.sh [--skip-infra] [--skip-build] [-h|--help]
#
# Environment (all optional): RUST_LOG (default info), LOG_FORMAT (default pretty),
# SEED_CATALOG (default true), ADMIN_EMAILS (default admin@ferrishop.local),
# CARGO_TARGET_DIR (binaries are taken from ${CARGO_TARGET_DIR:-target}/debug),
# DEV_STOP_TIMEOUT seconds to wait for a clean stop before SIGKILL (default 10).
# Any other variable a service reads (see `<binary> --help`) is passed through.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SKIP_INFRA=0
SKIP_BUILD=0
for arg in "$@"; do
  case "$arg" in
    --skip-infra) SKIP_INFRA=1 ;;
    --skip-build) SKIP_BUILD=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "dev: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

# Start order matters only for a quiet start-up: upstreams before the services calling them.
SERVICES=(user inventory payment order gateway)
declare -A PORTS=([user]="8081 50052" [inventory]="8084 50055" [payment]="8083 50054" [order]="8082 50053" [gateway]="8080 50051")
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
STOP_TIMEOUT=${DEV_STOP_TIMEOUT:-10}

export RUST_LOG=${RUST_LOG:-info}
export LOG_FORMAT=${LOG_FORMAT:-pretty}
export SEED_CATALOG=${SEED_CATALOG:-true}
export ADMIN_EMAILS=${ADMIN_EMAILS:-admin@ferrishop.local}
# Traces go to a collector on the default 127.0.0.1:4317 when one listens
# there (or wherever OTEL_EXPORTER_OTLP_ENDPOINT says); without one, the
# services would only log failed exports.
if [[ -z ${OTEL_TRACES_EXPORTER:-} && -z ${OTEL_EXPORTER_OTLP_ENDPOINT:-} ]] &&
  ! (exec 3<>/dev/tcp/127.0.0.1/4317) 2>/dev/null; then
  export OTEL_TRACES_EXPORTER=none
fi

section() { printf '\n==> %s\n' "$*"; }

if ((!SKIP_INFRA)); then
  section "infrastructure"
  "$ROOT/scripts/infra-up.sh"
fi

if ((!SKIP_BUILD)); then
  section "build"
  cargo build --bins -p gateway -p user -p order -p payment -p inventory
fi

for svc in "${SERVICES[@]}"; do
  if [[ ! -x "$BIN_DIR/$svc" ]]; then
    echo "dev: $BIN_DIR/$svc not found; run without --skip-build (or set CARGO_TARGET_DIR)" >&2
    exit 1
  fi
done

busy=()
for svc in "${SERVICES[@]}"; do
  for port in ${PORTS[$svc]}; do
    if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
      busy+=("$port ($svc)")
    fi
  done
done
if ((${#busy[@]})); then
  echo "dev: ports already in use: ${busy[*]} — is another copy running? (ss -ltnp shows who holds them)" >&2
  exit 1
fi

# ---------------------------------------------------------------------------

if [[ -t 1 ]]; then
  COLORS=($'\e[36m' $'\e[33m' $'\e[35m' $'\e[32m' $'\e[34m')
  RESET=$'\e[0m'
else
  COLORS=('' '' '' '' '')
  RESET=''
fi

declare -A PID_OF=()
declare -A NAME_OF=()

start_service() {
  local svc=$1 color=$2 prefix
  prefix=$(printf '%s[%-9s]%s ' "$color" "$svc" "$RESET")
  # The subshell execs the binary, so $! is the service's own pid. sed only prefixes lines:
  # it ignores Ctrl-C and ends when the service closes its output, so shutdown logs still show.
  (exec "$BIN_DIR/$svc" </dev/null > >(trap '' INT TERM; exec sed -u "s/^/$prefix/") 2>&1) &
  PID_OF[$svc]=$!
  NAME_OF[$!]=$svc
}

# True while PID is a live process (an exited child stays a zombie until it is reaped).
running() {
  local _pid _comm state
  { read -r _pid _comm state _ <"/proc/$1/stat"; } 2>/dev/null || return 1
  [[ $state != Z ]]
}

STOPPING=0
stop_all() {
  ((STOPPING)) && return 0
  STOPPING=1
  # The stop is bounded (SIGKILL after DEV_STOP_TIMEOUT), so a second Ctrl-C is not needed.
  trap '' INT TERM
  local svc pid alive deadline
  printf '\n==> stopping %s\n' "${SERVICES[*]}"
  # Reverse order: the gateway first, upstreams last.
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
    pid=${PID_OF[${SERVICES[i]}]:-}
    [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true
  done
  deadline=$((SECONDS + STOP_TIMEOUT))
  while ((SECONDS < deadline)); do
    alive=0
    for pid in "${PID_OF[@]}"; do
      running "$pid" && alive=1
    done
    ((alive)) || break
    sleep 0.2
  done
  for svc in "${SERVICES[@]}"; do
    pid=${PID_OF[$svc]:-}
    if [[ -n "$pid" ]] && running "$pid"; then
      echo "dev: $svc did not stop within ${STOP_TIMEOUT}s, killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
}

on_signal() {
  stop_all
  exit 130
}
trap on_signal INT TERM
trap stop_all EXIT

section "services (Ctrl-C stops them all)"
i=0
for svc in "${SERVICES[@]}"; do
  start_service "$svc" "${COLORS[i]}"
  i=$((i + 1))
done
echo "    gateway: REST http://127.0.0.1:8080/api/v1  gRPC 127.0.0.1:50051  (admin: $ADMIN_EMAILS)"

# Wait until any service exits on its own, then take the rest down with it.
status=0
exited=''
wait -n -p exited "${PID_OF[@]}" || status=$?
if [[ -n "$exited" ]]; then
  echo "dev: ${NAME_OF[$exited]} exited with status $status; stopping the others" >&2
fi
stop_all
exit $((status == 0 ? 1 : status))
