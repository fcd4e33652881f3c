#!/usr/bin/env bash
# Start the infrastructure Ferrishop needs on a Debian/Ubuntu machine, without Docker.
#
#   PostgreSQL   127.0.0.1:5432   trust auth, user postgres
#   RabbitMQ     127.0.0.1:5672   guest/guest
#   NATS         127.0.0.1:4222   JetStream enabled
#   Kafka API    127.0.0.1:9092   tansu (Kafka-compatible broker, in-memory storage)
#   prometheus   installed, not started: the end-to-end observability test starts its own
#   ports        50051-50055 (the services' gRPC ports) reserved from the kernel's
#                ephemeral range, so no outgoing connection takes one before its service
#
# Whatever is already listening is left alone, so running this again is harmless.
# The per-service databases (users, orders, payments, inventory) are created if missing.
# tansu keeps its data in memory: topics are gone when it restarts.
# Missing Debian packages are installed with apt-get (as root, or through sudo;
# waiting up to 10 minutes for another apt run to release its lock);
# tansu is installed from crates.io with cargo. The Kafka endpoint is checked with a
# real produce/consume round trip through librdkafka (confluent-kafka, in a virtualenv).
#
# Usage: scripts/infra-up.sh [--no-verify] [-h|--help]
#
# Environment:
#   INFRA_WAIT_SECONDS   how long to wait for each port once started   (default 60; RabbitMQ 120)
#   FERRISHOP_STATE_DIR  logs, pid files, the check virtualenv         (default ${XDG_STATE_HOME:-~/.local/state}/ferrishop)
#   TANSU_VERSION        tansu version installed when missing          (default 0.6.0)
#   TANSU_TARGET_DIR     cargo target dir used to build tansu          (default ~/.cache/tansu-build, keeps rebuilds incremental)
#   TANSU_BUILD_WAIT     seconds to wait for a tansu build already in progress (default 2400)
#   KAFKA_CHECK_TIMEOUT  seconds allowed for the Kafka round trip      (default 30)
#   TANSU_LOG            RUST_LOG filter for the tansu broker           (default warn)
set -euo pipefail

VERIFY=1
for arg in "$@"; do
  case "$arg" in
    --no-verify) VERIFY=0 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "infra-up: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

WAIT_SECONDS=${INFRA_WAIT_SECONDS:-60}
STATE_DIR=${FERRISHOP_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/ferrishop}
TANSU_VERSION=${TANSU_VERSION:-0.6.0}
TANSU_TARGET_DIR=${TANSU_TARGET_DIR:-$HOME/.cache/tansu-build}
TANSU_BUILD_WAIT=${TANSU_BUILD_WAIT:-2400}
KAFKA_CHECK_TIMEOUT=${KAFKA_CHECK_TIMEOUT:-30}
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
export PATH="$CARGO_BIN:$PATH"
export DEBIAN_FRONTEND=noninteractive

mkdir -p "$STATE_DIR"

if [[ -t 1 ]]; then
  C_OK=$'\e[32m' C_BAD=$'\e[31m' C_DIM=$'\e[2m' C_OFF=$'\e[0m'
else
  C_OK='' C_BAD='' C_DIM='' C_OFF=''
fi

FAILED=()

say() { printf '%-10s %s\n' "$1:" "$2"; }
note() { printf '%-10s %s%s%s\n' "" "$C_DIM" "$1" "$C_OFF"; }
ok() { say "$1" "${C_OK}$2${C_OFF}"; }
fail() {
  say "$1" "${C_BAD}FAILED${C_OFF}: $2"
  FAILED+=("$1")
}

# Run a command as root (directly, or through non-interactive sudo).
as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    echo "infra-up: '$*' needs root and sudo is not available" >&2
    return 1
  fi
}

port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# wait_port PORT SECONDS: 0 once PORT accepts connections, 1 after SECONDS.
wait_port() {
  local port=$1 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    port_open "$port" && return 0
    sleep 0.5
  done
  port_open "$port"
}

APT_UPDATED=0
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "infra-up: apt-get not found; install $* by hand" >&2
    return 1
  fi
  local log="$STATE_DIR/apt.log"
  if ((APT_UPDATED == 0)); then
    note "apt-get update (log: $log)"
    as_root apt-get -o DPkg::Lock::Timeout=600 update >>"$log" 2>&1 || { tail -n 20 "$log" >&2; return 1; }
    APT_UPDATED=1
  fi
  note "apt-get install $* (log: $log)"
  as_root apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@" >>"$log" 2>&1 || { tail -n 20 "$log" >&2; return 1; }
}

# --------------------------------------------------------------------------- PostgreSQL

pg_version() {
  # Newest configured cluster version, else newest installed server.
  local v
  v=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [[ -n "$v" ]] || v=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
  printf '%s' "$v"
}

pg_allow_trust() {
  # Local development only: let anyone on this machine connect as any user.
  local hba="/etc/postgresql/$1/main/pg_hba.conf" tmp
  [[ -f "$hba" ]] || return 0
  grep -q 'ferrishop: local trust' "$hba" && return 0
  tmp=$(mktemp)
  {
    echo "# ferrishop: local trust (development machine, added by scripts/infra-up.sh)"
    echo "local   all   all                  trust"
    echo "host    all   all   127.0.0.1/32   trust"
    echo "host    all   all   ::1/128        trust"
    echo
    cat "$hba"
  } >"$tmp"
  as_root cp "$tmp" "$hba"
  rm -f "$tmp"
}

pg_psql() {
  psql "postgres://postgres@127.0.0.1:5432/postgres" -v ON_ERROR_STOP=1 -qtA "$@"
}

postgres_up() {
  local name=postgres port=5432 fresh=0 ver log
  if port_open $port; then
    ok $name "already running on 127.0.0.1:$port"
  else
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [[ -z "$(pg_version)" ]]; then
      apt_install postgresql || { fail $name "could not install the postgresql package (log: $STATE_DIR/apt.log)"; return; }
      fresh=1
    fi
    ver=$(pg_version)
    if [[ ! -d "/etc/postgresql/$ver/main" ]]; then
      as_root pg_createcluster "$ver" main >>"$STATE_DIR/postgres-start.log" 2>&1 || true
      fresh=1
    fi
    ((fresh)) && pg_allow_trust "$ver"
    log="/var/log/postgresql/postgresql-$ver-main.log"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start \
      </dev/null >>"$STATE_DIR/postgres-start.log" 2>&1 || true
    if wait_port $port "$WAIT_SECONDS"; then
      # The package's own scripts may have started the cluster before pg_hba.conf was changed.
      if ((fresh)); then
        as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main reload \
          </dev/null >>"$STATE_DIR/postgres-start.log" 2>&1 || true
      fi
      ok $name "started (PostgreSQL $ver) on 127.0.0.1:$port"
    else
      fail $name "not listening on 127.0.0.1:$port after ${WAIT_SECONDS}s (logs: $log, $STATE_DIR/postgres-start.log)"
      return
    fi
  fi

  if ! command -v psql >/dev/null 2>&1; then
    note "psql not found: skipping the login check and database creation"
    return
  fi
  if ! pg_psql -c 'select 1' >/dev/null 2>"$STATE_DIR/postgres-check.log"; then
    fail $name "cannot log in as postgres without a password: $(head -n 1 "$STATE_DIR/postgres-check.log")"
    note "add 'host all all 127.0.0.1/32 trust' at the top of pg_hba.conf and reload PostgreSQL"
    return
  fi
  # One database per service (database-per-service); services run their own migrations.
  local db created=()
  for db in users orders payments inventory; do
    if [[ -z "$(pg_psql -c "select 1 from pg_database where datname = '$db'")" ]]; then
      pg_psql -c "create database \"$db\"" >/dev/null && created+=("$db")
    fi
  done
  ((${#created[@]} == 0)) || note "created databases: ${created[*]}"
}

# --------------------------------------------------------------------------- RabbitMQ

# An AMQP broker answers the protocol header with its Connection.Start frame;
# a wedged node still accepts TCP but never answers.
amqp_answers() {
  timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672 && printf "AMQP\x00\x00\x09\x01" >&3 && head -c 1 <&3' \
    2>/dev/null | grep -q .
}

rabbitmq_up() {
  local name=rabbitmq port=5672
  if port_open $port; then
    if amqp_answers; then
      ok $name "already running on 127.0.0.1:$port"
      rabbitmq_test_policy
      return
    fi
    note "rabbitmq accepts connections but does not answer AMQP: restarting it"
    as_root pkill -9 -f 'rabbit boot' || true
    sleep 2
  fi
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    apt_install rabbitmq-server || { fail $name "could not install the rabbitmq-server package (log: $STATE_DIR/apt.log)"; return; }
  fi
  as_root rabbitmq-server -detached </dev/null >>"$STATE_DIR/rabbitmq-start.log" 2>&1 || true
  # The Erlang VM takes a while to boot.
  local waited=0
  while ! amqp_answers && ((waited < ${INFRA_WAIT_SECONDS:-120})); do
    sleep 1
    waited=$((waited + 1))
  done
  if amqp_answers; then
    ok $name "started on 127.0.0.1:$port (guest/guest)"
    rabbitmq_test_policy
  else
    fail $name "not answering AMQP on 127.0.0.1:$port (logs: /var/log/rabbitmq/, $STATE_DIR/rabbitmq-start.log)"
  fi
}

# Tests declare durable queues under unique names (a 32-digit hex id in each,
# testkit::brokers::unique_name); on a development broker they would pile up
# run after run, and a few hundred idle quorum queues slow the broker down.
# Such queues expire once unused for 5 minutes; the platform's own queues have
# fixed names and keep their dead letters.
rabbitmq_test_policy() {
  command -v rabbitmqctl >/dev/null 2>&1 || return 0
  timeout 30 rabbitmqctl clear_policy ferrishop-dev-expiry >/dev/null 2>&1 || true
  timeout 30 rabbitmqctl set_policy --apply-to queues ferrishop-test-expiry '[0-9a-f]{32}' '{"expires":300000}' \
    >>"$STATE_DIR/rabbitmq-start.log" 2>&1 || note "could not set the queue expiry policy"
}

# --------------------------------------------------------------------------- NATS

nats_jetstream_enabled() {
  # The server's INFO line, sent on connect, says whether JetStream is on.
  local info
  info=$(timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222; IFS= read -r -t 2 line <&3; printf "%s" "$line"' 2>/dev/null) || return 2
  [[ "$info" == *'"jetstream":true'* ]]
}

nats_up() {
  local name=nats port=4222 log=/var/log/nats-server.log state=already
  if ! port_open $port; then
    state=started
    if [[ ! -x /usr/sbin/nats-server ]]; then
      apt_install nats-server || { fail $name "could not install the nats-server package (log: $STATE_DIR/apt.log)"; return; }
    fi
    as_root mkdir -p /var/lib/nats-server
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
      -a 127.0.0.1 -p $port -js -sd /var/lib/nats-server -l "$log" \
      </dev/null >>"$STATE_DIR/nats-start.log" 2>&1 || true
    if ! wait_port $port "$WAIT_SECONDS"; then
      fail $name "not listening on 127.0.0.1:$port after ${WAIT_SECONDS}s (logs: $log, $STATE_DIR/nats-start.log)"
      return
    fi
  fi
  if nats_jetstream_enabled; then
    if [[ $state == already ]]; then
      ok $name "already running on 127.0.0.1:$port (JetStream on)"
    else
      ok $name "started on 127.0.0.1:$port (JetStream on)"
    fi
  else
    fail $name "a server listens on 127.0.0.1:$port but JetStream is off; restart it with -js (log: $log)"
  fi
}

# --------------------------------------------------------------------------- Kafka (tansu)

tansu_build_running() {
  pgrep -f 'cargo install .*tansu' >/dev/null 2>&1
}

tansu_install() {
  if command -v tansu >/dev/null 2>&1; then
    return 0
  fi
  if tansu_build_running; then
    note "a tansu build is already in progress; waiting for it (up to ${TANSU_BUILD_WAIT}s)"
    local deadline=$((SECONDS + TANSU_BUILD_WAIT))
    while tansu_build_running && ((SECONDS < deadline)); do
      sleep 10
    done
    hash -r
    command -v tansu >/dev/null 2>&1 && return 0
    tansu_build_running && { echo "infra-up: the tansu build is still running after ${TANSU_BUILD_WAIT}s" >&2; return 1; }
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "infra-up: cargo not found; install Rust (rustup) to build tansu" >&2
    return 1
  fi
  local log="$STATE_DIR/tansu-install.log"
  note "installing tansu $TANSU_VERSION from crates.io (about 15 minutes on 2 cores; log: $log)"
  # The default build has no storage engine: dynostore provides memory://.
  if ! CARGO_TARGET_DIR="$TANSU_TARGET_DIR" cargo install tansu --version "$TANSU_VERSION" \
    --locked --features dynostore >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    return 1
  fi
  hash -r
}

# True while the broker from our pid file is alive (not a zombie waiting to be reaped,
# not a recycled pid).
tansu_pid_alive() {
  local pid _pid _comm state
  [[ -f "$STATE_DIR/tansu.pid" ]] || return 1
  pid=$(<"$STATE_DIR/tansu.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  { read -r _pid _comm state _ <"/proc/$pid/stat"; } 2>/dev/null || return 1
  [[ $state != Z ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'tansu broker'
}

tansu_start() {
  local log="$STATE_DIR/tansu.log"
  printf '\n---- %s starting tansu\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$log"
  # Explicit flags win over tansu's own environment variables (LISTENER_URL, STORAGE_ENGINE, ...);
  # it runs from the state dir because it also reads a .env file from its working directory.
  # Detached from this shell (own session, no inherited stdio), it outlives make, CI steps and Ctrl-C.
  (
    cd "$STATE_DIR"
    exec setsid nohup env -u OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG="${TANSU_LOG:-warn}" \
      tansu broker \
      --listener-url tcp://127.0.0.1:9092 \
      --advertised-listener-url tcp://127.0.0.1:9092 \
      --storage-engine memory://tansu/ \
      --cluster-id ferrishop \
      </dev/null >>"$log" 2>&1
  ) &
  echo $! >"$STATE_DIR/tansu.pid"
}

kafka_check_tool() {
  # A virtualenv with confluent-kafka: its wheel bundles a current librdkafka,
  # the same client library the services use (rdkafka crate).
  local venv="$STATE_DIR/kafka-check-venv"
  if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
    printf '%s' "$venv/bin/python"
    return 0
  fi
  local py
  py=$(command -v python3) || { echo "infra-up: python3 not found (needed for the Kafka check)" >&2; return 1; }
  rm -rf "$venv"
  if ! "$py" -m venv "$venv" >>"$STATE_DIR/kafka-check-venv.log" 2>&1; then
    apt_install python3-venv >/dev/null && "$py" -m venv "$venv" >>"$STATE_DIR/kafka-check-venv.log" 2>&1 || {
      echo "infra-up: could not create a virtualenv (log: $STATE_DIR/kafka-check-venv.log)" >&2
      return 1
    }
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'confluent-kafka>=2.4,<3' \
    >>"$STATE_DIR/kafka-check-venv.log" 2>&1 || {
    echo "infra-up: pip install confluent-kafka failed (log: $STATE_DIR/kafka-check-venv.log)" >&2
    return 1
  }
  printf '%s' "$venv/bin/python"
}

# Produce one message and read it back. Prints the elapsed time; non-zero on failure.
kafka_round_trip() {
  local py
  py=$(kafka_check_tool) || return 1
  timeout $((KAFKA_CHECK_TIMEOUT + 10)) "$py" - "$KAFKA_CHECK_TIMEOUT" <<'PY'
import sys, time, uuid
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

limit = float(sys.argv[1])
start = time.monotonic()
conf = {"bootstrap.servers": "127.0.0.1:9092", "broker.address.family": "v4"}
topic = "ferrishop.infra-check"

admin = AdminClient(conf)
if topic not in admin.list_topics(timeout=limit).topics:
    for fut in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        try:
            fut.result(timeout=limit)
        except KafkaException as e:
            if e.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS
                raise

token = uuid.uuid4().hex.encode()
delivered = []
producer = Producer({**conf, "acks": "all"})
producer.produce(topic, key=b"infra-check", value=token,
                 on_delivery=lambda err, msg: delivered.append((err, msg)))
producer.flush(limit)
if not delivered or delivered[0][0] is not None:
    sys.exit(f"produce failed: {delivered[0][0] if delivered else 'no delivery report'}")
offset = delivered[0][1].offset()

consumer = Consumer({**conf, "group.id": "ferrishop-infra-check", "enable.auto.commit": False})
consumer.assign([TopicPartition(topic, 0, offset)])
try:
    while time.monotonic() - start < limit:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            sys.exit(f"consume failed: {msg.error()}")
        if msg.value() == token:
            print(f"{time.monotonic() - start:.1f}s")
            sys.exit(0)
    sys.exit(f"message not read back within {limit:.0f}s")
finally:
    consumer.close()
PY
}

kafka_up() {
  local name=kafka port=9092 log="$STATE_DIR/tansu.log" state=already elapsed
  if ! port_open $port; then
    state=started
    if ! tansu_install; then
      fail $name "tansu is not installed and could not be built (log: $STATE_DIR/tansu-install.log)"
      return
    fi
    # A broker from our pid file may still be booting (keep waiting) or shutting down
    # (start a new one once it is gone).
    local deadline=$((SECONDS + WAIT_SECONDS)) starts=0
    until port_open $port; do
      if ! tansu_pid_alive; then
        if ((starts == 2)); then
          fail $name "tansu exited right after starting: $(tail -n 1 "$log") (log: $log)"
          return
        fi
        tansu_start
        starts=$((starts + 1))
      fi
      if ((SECONDS >= deadline)); then
        fail $name "tansu is not listening on 127.0.0.1:$port after ${WAIT_SECONDS}s (log: $log)"
        return
      fi
      sleep 0.5
    done
  fi
  if ((VERIFY)); then
    if elapsed=$(kafka_round_trip 2>"$STATE_DIR/kafka-check.log"); then
      if [[ $state == already ]]; then
        ok $name "already running on 127.0.0.1:$port (produce/consume round trip OK in $elapsed)"
      else
        ok $name "started tansu on 127.0.0.1:$port (produce/consume round trip OK in $elapsed)"
      fi
    else
      fail $name "127.0.0.1:$port is listening but the produce/consume round trip failed: $(tail -n 1 "$STATE_DIR/kafka-check.log") (logs: $STATE_DIR/kafka-check.log, $log)"
    fi
  elif [[ $state == already ]]; then
    ok $name "already running on 127.0.0.1:$port"
  else
    ok $name "started tansu on 127.0.0.1:$port"
  fi
}

# --------------------------------------------------------------------------- Prometheus

# Installed only: crates/e2e/tests/observability.rs starts a prometheus of its
# own, on a free port, scraping the services it spawned. Debian's package
# comes with a system service; where systemd runs it, that one listens on 9090.
prometheus_installed() {
  local name=prometheus
  if command -v prometheus >/dev/null 2>&1; then
    ok $name "installed ($(prometheus --version 2>&1 | sed -n '1s/^prometheus, version \([^ ]*\).*/\1/p'); started by the tests that need it)"
    return
  fi
  apt_install prometheus || { fail $name "could not install the prometheus package (log: $STATE_DIR/apt.log)"; return; }
  ok $name "installed (started by the tests that need it)"
}

# The services' gRPC ports (50051-50055) lie in Linux's ephemeral port range
# (32768-60999 by default): the kernel may give one to an outgoing connection
# as its local port (a service's pool connecting to Postgres, say), and the
# service that starts next cannot listen on it ("Address already in use").
# Reserved ports are never handed out that way, and tests' port-0 listeners
# skip them too.
reserve_service_ports() {
  local name=ports want=50051-50055 file=/proc/sys/net/ipv4/ip_local_reserved_ports current
  current=$(cat "$file" 2>/dev/null) || { ok $name "no $file here; nothing to reserve"; return; }
  if [[ ",$current," == *",$want,"* ]]; then
    ok $name "$want already reserved from the ephemeral range"
    return
  fi
  if as_root sysctl -qw "net.ipv4.ip_local_reserved_ports=${current:+$current,}$want" 2>/dev/null; then
    ok $name "$want reserved from the ephemeral range"
  else
    note "could not reserve $want (net.ipv4.ip_local_reserved_ports); a service may rarely find its gRPC port taken"
  fi
}

# ---------------------------------------------------------------------------

postgres_up
reserve_service_ports
rabbitmq_up
nats_up
kafka_up
prometheus_installed

if ((${#FAILED[@]})); then
  echo "infra-up: could not bring up: ${FAILED[*]} (state and logs in $STATE_DIR)" >&2
  exit 1
fi
echo "infra-up: all services are up"
