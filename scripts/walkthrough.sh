#!/usr/bin/env bash
# A first walk through Ferrishop with curl, against the gateway of a running
# stack (`docker compose up -d --build`, or `make dev`):
#
#   1. register a user and log in (an access token)
#   2. list the catalogue and quote two of the first product in stock
#   3. top up the user's wallet
#   4. place an order and watch its status change over Server-Sent Events
#      until it is CONFIRMED or REJECTED
#
# Then look the order up in Jaeger (http://127.0.0.1:16686, service gateway)
# and Grafana (http://127.0.0.1:3000).
#
# Needs curl and jq. Every request and response is printed.
#
# Usage: scripts/walkthrough.sh [-h|--help]
#
# Environment:
#   GATEWAY        the gateway's REST address       (default http://127.0.0.1:8080)
#   EMAIL          the user to register             (default walker-<time>@example.com)
#   PASSWORD       their password                   (default correct-horse-battery-staple)
#   WAIT_SECONDS   how long to wait for readiness, the wallet and the order (default 60)
set -euo pipefail

case "${1:-}" in
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
  "") ;;
  *)
    echo "walkthrough: unknown argument: $1 (try --help)" >&2
    exit 2
    ;;
esac

GATEWAY=${GATEWAY:-http://127.0.0.1:8080}
EMAIL=${EMAIL:-walker-$(date +%s)@example.com}
PASSWORD=${PASSWORD:-correct-horse-battery-staple}
WAIT_SECONDS=${WAIT_SECONDS:-60}

for tool in curl jq; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "walkthrough: $tool is needed (apt-get install $tool, brew install $tool)" >&2
    exit 1
  }
done

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() {
  echo "walkthrough: $*" >&2
  exit 1
}

# api METHOD PATH [JSON] [extra curl args...]: prints the response body;
# STATUS holds the HTTP status, HEADERS the response headers.
STATUS=
HEADERS=$(mktemp)
trap 'rm -f "$HEADERS"' EXIT
api() {
  local method=$1 path=$2 body=${3:-}
  shift $(($# < 3 ? $# : 3))
  local args=(-sS -X "$method" -D "$HEADERS" -o /dev/stdout -w '\n%{http_code}' "$@")
  [[ -n ${TOKEN:-} ]] && args+=(-H "Authorization: Bearer $TOKEN")
  [[ -n $body ]] && args+=(-H 'Content-Type: application/json' --data "$body")
  printf '> %s %s %s\n' "$method" "$path" "$body" >&2
  local response
  response=$(curl "${args[@]}" "$GATEWAY$path")
  STATUS=${response##*$'\n'}
  RESPONSE=${response%$'\n'*}
  printf '< %s %s\n' "$STATUS" "$RESPONSE" >&2
}
RESPONSE=
TOKEN=

step "Waiting for the gateway at $GATEWAY"
deadline=$((SECONDS + WAIT_SECONDS))
until curl -fsS -o /dev/null "$GATEWAY/readyz" 2>/dev/null; do
  ((SECONDS < deadline)) || fail "the gateway is not ready after ${WAIT_SECONDS}s (docker compose ps?)"
  sleep 2
done
echo "ready"

step "1. Register $EMAIL and log in"
api POST /api/v1/users "$(jq -nc --arg e "$EMAIL" --arg p "$PASSWORD" '{email: $e, password: $p, name: "Walker"}')"
[[ $STATUS == 201 || $STATUS == 409 ]] || fail "registration answered $STATUS"
api POST /api/v1/auth/login "$(jq -nc --arg e "$EMAIL" --arg p "$PASSWORD" '{email: $e, password: $p}')"
[[ $STATUS == 200 ]] || fail "login answered $STATUS"
TOKEN=$(jq -r .access_token <<<"$RESPONSE")
api GET /api/v1/users/me

step "2. The catalogue"
TOKEN_SAVED=$TOKEN
TOKEN=
api GET '/api/v1/products?in_stock=true&limit=20'
[[ $STATUS == 200 ]] || fail "listing products answered $STATUS"
# The first product with two units left (an earlier load run may have sold most).
PRODUCT=$(jq -r '[.items[] | select(.available >= 2)][0].id // empty' <<<"$RESPONSE")
[[ -n $PRODUCT ]] || fail "no product with two units in stock (is the inventory service seeded? SEED_CATALOG=true)"
api GET "/api/v1/products/$PRODUCT/quote?quantity=2&tax_rate=0.08"
TOKEN=$TOKEN_SAVED

step "3. Top up the wallet (opened when the user registered)"
deadline=$((SECONDS + WAIT_SECONDS))
while :; do
  api GET /api/v1/wallet
  [[ $STATUS == 200 ]] && break
  ((SECONDS < deadline)) || fail "no wallet after ${WAIT_SECONDS}s"
  sleep 2
done
api POST /api/v1/wallet/deposits '{"amount": {"amount": 100000, "currency": "EUR"}}' \
  -H "Idempotency-Key: walkthrough-deposit-$EMAIL"
[[ $STATUS == 201 || $STATUS == 200 ]] || fail "the deposit answered $STATUS"

step "4. Place an order and watch it"
api POST /api/v1/orders "$(jq -nc --arg p "$PRODUCT" '{items: [{product_id: $p, quantity: 2}]}')" \
  -H "Idempotency-Key: walkthrough-order-$EMAIL"
[[ $STATUS == 202 ]] || fail "placing the order answered $STATUS"
ORDER=$(jq -r .id <<<"$RESPONSE")
grep -i '^location:' "$HEADERS" || true

echo "> GET /api/v1/orders/$ORDER/events (Server-Sent Events)" >&2
final=
while IFS= read -r line; do
  line=${line%$'\r'}
  [[ -n $line ]] && printf '< %s\n' "$line" >&2
  if [[ $line == data:* ]]; then
    status=$(jq -r '.status // empty' <<<"${line#data:}" 2>/dev/null || true)
    case "$status" in
      CONFIRMED | REJECTED | CANCELLED)
        final=$status
        break
        ;;
    esac
  fi
done < <(curl -sSN --max-time "$WAIT_SECONDS" -H "Authorization: Bearer $TOKEN" \
  -H 'Accept: text/event-stream' "$GATEWAY/api/v1/orders/$ORDER/events" || true)

# Read it back; should the event stream have ended early, poll until the
# order settles.
deadline=$((SECONDS + WAIT_SECONDS))
while :; do
  api GET "/api/v1/orders/$ORDER"
  [[ $STATUS == 200 ]] || fail "reading the order back answered $STATUS"
  case "$(jq -r .status <<<"$RESPONSE")" in
    CONFIRMED | REJECTED | CANCELLED) break ;;
  esac
  ((SECONDS < deadline)) || break
  sleep 1
done
final=${final:-$(jq -r .status <<<"$RESPONSE")}
step "Order $ORDER is $final"
[[ $final == CONFIRMED ]] || fail "the order ended $final ($(jq -c '.failure_reason // empty' <<<"$RESPONSE")), not CONFIRMED"
[[ $(jq -r .status <<<"$RESPONSE") == CONFIRMED ]] || fail "the event stream said CONFIRMED, the order says otherwise"
echo "Its trace: http://127.0.0.1:16686/search?service=gateway   Dashboards: http://127.0.0.1:3000"
