#!/usr/bin/env bash
# Make HAProxy (the agents' ingress data plane, orca.agent.proxy) available: Debian's `haproxy` package.
#
# Idempotent: prints the version when an haproxy binary is there (PATH, /usr/sbin, /usr/local/sbin);
# otherwise, as root with apt-get, installs the package (`apt-get update` only when the install fails
# without it). Each agent runs its own HAProxy as a child process; the package's own systemd service,
# if any, is left alone and unused. Called by scripts/ensure-docker.sh (so by scripts/test.sh and CI)
# (scripts/bootstrap-cluster.sh installs the same package itself when an agent has an [agent.proxy]).
#
# Last line printed: `haproxy ready: <version>`. Exit 1 when it is missing and cannot be installed.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

log() { echo "ensure-haproxy: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

find_haproxy() {
    command -v haproxy 2>/dev/null && return 0
    local p
    for p in /usr/sbin/haproxy /usr/local/sbin/haproxy; do
        [ -x "$p" ] && { echo "$p"; return 0; }
    done
    return 1
}

if ! bin=$(find_haproxy); then
    [ "$(id -u)" -eq 0 ] || die "HAProxy is missing: run 'sudo $0' (installs Debian's haproxy package)"
    command -v apt-get >/dev/null || die "no apt-get: install HAProxy (>= 2.4) by hand"
    log "installing haproxy"
    if ! apt-get install -y -q haproxy >/tmp/ensure-haproxy-apt.log 2>&1; then
        log "install failed, running apt-get update and retrying"
        apt-get update -q >>/tmp/ensure-haproxy-apt.log 2>&1 || true
        apt-get install -y -q haproxy >>/tmp/ensure-haproxy-apt.log 2>&1 \
            || { tail -20 /tmp/ensure-haproxy-apt.log >&2; die "apt-get install haproxy failed"; }
    fi
    bin=$(find_haproxy) || die "haproxy missing after installing the package"
fi
echo "haproxy ready: $("$bin" -v | head -1)"
