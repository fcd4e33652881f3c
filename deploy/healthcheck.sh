#!/usr/bin/env bash
# Container healthcheck of a Ferrishop service image.
#
#   healthcheck                         exit 0 when GET /readyz on the HTTP port answers 200
#   healthcheck --default-port BINARY   print BINARY's default HTTP port (from its --help)
#
# The port is HTTP_ADDR's (e.g. 0.0.0.0:8081), else the one in
# /etc/ferrishop/http-port, written at image build time by the second form.
# The request goes to 127.0.0.1, so HTTP_ADDR must listen on all interfaces or
# on loopback. It uses bash's /dev/tcp: the runtime image needs no curl or wget.
# The caller (Docker's HEALTHCHECK --timeout) bounds the time it may take;
# reading the status line is bounded here too.
set -euo pipefail

if [[ ${1:-} == --default-port ]]; then
  binary=${2:?usage: healthcheck --default-port BINARY}
  # clap prints: ... [env: HTTP_ADDR=] [default: 0.0.0.0:8081]
  port=$("$binary" --help | sed -n 's/.*\[env: HTTP_ADDR=[^]]*\] \[default: [^]]*:\([0-9][0-9]*\)\].*/\1/p' | head -n 1)
  if [[ -z $port ]]; then
    echo "healthcheck: no default HTTP_ADDR port in '$binary --help'" >&2
    exit 1
  fi
  echo "$port"
  exit 0
fi

port=${HTTP_ADDR:-}
port=${port##*:}
if [[ -z $port ]]; then
  port=$(cat /etc/ferrishop/http-port)
fi

exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ferrishop-healthcheck\r\nConnection: close\r\n\r\n' >&3
IFS= read -r -t 5 status <&3 || true
exec 3<&-
if [[ $status == "HTTP/1."[01]" 200"* ]]; then
  exit 0
fi
echo "healthcheck: GET http://127.0.0.1:${port}/readyz answered: ${status%$'\r'}" >&2
exit 1
