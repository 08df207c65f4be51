#!/usr/bin/env bash
# Make a Docker engine answer and build the test image orca-test/busybox; make HAProxy (the agents'
# ingress data plane) available through scripts/ensure-haproxy.sh.
#
# Idempotent: on a machine where `docker info` answers and the image exists it only checks and prints.
# Otherwise (as root on Debian) it installs docker.io / busybox-static when missing, starts dockerd in
# the background (log: /var/log/dockerd-orca.log) and imports the image from busybox-static, so the
# tests never pull from a registry. dockerd outlives this script on purpose: the test run needs it.
#
# dockerd is started with the first of these flag sets that yields a working engine (answers
# `docker info` within DOCKERD_WAIT_S and runs a container on the default bridge):
#   (defaults) | --storage-driver=vfs | --iptables=false | --storage-driver=vfs --iptables=false
# vfs is for hosts whose root filesystem cannot carry overlay2 (e.g. inside another overlay);
# --iptables=false for kernels without netfilter (published ports then go through docker-proxy only).
# On the project's Debian 12 VMs the defaults work (overlay2, iptables-nft).
#
# Last line printed: `docker ready: <server version>, image orca-test/busybox`.
set -euo pipefail

IMAGE="orca-test/busybox:latest"
LOG=/var/log/dockerd-orca.log
DOCKERD_WAIT_S=${DOCKERD_WAIT_S:-60}
export DEBIAN_FRONTEND=noninteractive

log() { echo "ensure-docker: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# `docker info` can hang on a half-started daemon; never wait on it unbounded.
engine_up() { timeout 10 docker info >/dev/null 2>&1; }

pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

# Install packages, running `apt-get update` only when the install fails without it: the package
# lists are usually fresh enough and an update costs time and network.
apt_install() {
    [ "$(id -u)" -eq 0 ] || die "need root to install $* (or start a Docker engine yourself)"
    command -v apt-get >/dev/null || die "no apt-get: install $* by hand"
    log "installing $*"
    if ! apt-get install -y -q "$@" >/tmp/ensure-docker-apt.log 2>&1; then
        log "install failed, running apt-get update and retrying"
        apt-get update -q >>/tmp/ensure-docker-apt.log 2>&1 || true
        apt-get install -y -q "$@" >>/tmp/ensure-docker-apt.log 2>&1 \
            || { tail -20 /tmp/ensure-docker-apt.log >&2; die "apt-get install $* failed"; }
    fi
}

ensure_docker_packages() {
    # Any engine counts (docker-ce too): docker.io is installed only when there is none at all,
    # since it conflicts with docker-ce.
    if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
        apt_install docker.io
    fi
}

# The agents' ingress proxy is HAProxy (orca.agent.proxy): scripts/ensure-haproxy.sh installs it.
ensure_haproxy() {
    "$(dirname "${BASH_SOURCE[0]}")/ensure-haproxy.sh" >&2
}

ensure_busybox_static() {
    # The plain `busybox` package is dynamically linked and would not run in an empty image.
    pkg_installed busybox-static || apt_install busybox-static
    [ -x /bin/busybox ] || die "/bin/busybox missing after installing busybox-static"
}

# Our pid 1 may not reap orphans, so a dead dockerd can linger as a zombie: kill -0 and pgrep still
# see it. Alive means a process that is not a zombie.
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

dockerd_running() {
    local pid
    for pid in $(pgrep -x dockerd || true); do alive "$pid" && return 0; done
    return 1
}

# Wait until the engine answers, or the given dockerd pid dies, or DOCKERD_WAIT_S pass.
wait_engine() {
    local pid=$1 deadline=$((SECONDS + DOCKERD_WAIT_S))
    while [ "$SECONDS" -lt "$deadline" ]; do
        engine_up && return 0
        if [ -n "$pid" ] && ! alive "$pid"; then return 1; fi
        sleep 0.5
    done
    engine_up
}

stop_dockerd() {
    local pid=$1 _
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 40); do alive "$pid" || return 0; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    sleep 1
}

# Callers test this function in `if`, where bash ignores `set -e`: every step checks its own status.
build_image() {
    if docker image inspect "$IMAGE" >/dev/null 2>&1; then return 0; fi
    ensure_busybox_static
    local tmp rc=0
    tmp=$(mktemp -d) || return 1
    make_image "$tmp" || rc=$?
    rm -rf "$tmp"
    if [ "$rc" -eq 0 ]; then log "built $IMAGE"; else log "building $IMAGE failed"; fi
    return "$rc"
}

make_image() {
    local root=$1/rootfs applet
    mkdir -p "$root/bin" "$root/tmp" "$root/etc" || return 1
    cp /bin/busybox "$root/bin/busybox" || return 1
    # The same links `busybox --install -s` makes, made from outside so no chroot is needed.
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet" || return 1
    done
    chmod 1777 "$root/tmp" || return 1
    # httpd and `id` look users up; an empty image would have no root entry.
    echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd" || return 1
    echo 'root:x:0:' >"$root/etc/group" || return 1
    tar -C "$root" -cf "$1/rootfs.tar" . || return 1
    docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' "$1/rootfs.tar" "$IMAGE" >/dev/null
}

# A container on the default bridge network proves storage driver, runtime and networking together.
smoke_test() {
    timeout 60 docker run --rm "$IMAGE" true >/dev/null 2>&1
}

start_dockerd() {
    local flags pid
    for flags in "" "--storage-driver=vfs" "--iptables=false" "--storage-driver=vfs --iptables=false"; do
        log "starting dockerd ${flags:-(default flags)}"
        echo "=== $(date -Is) ensure-docker: dockerd $flags" >>"$LOG"
        # setsid + nohup: the daemon must survive this script and the shell that called it.
        # shellcheck disable=SC2086  # $flags is a list of words
        setsid nohup dockerd $flags >>"$LOG" 2>&1 </dev/null &
        pid=$!
        if wait_engine "$pid" && build_image && smoke_test; then
            log "dockerd running (pid $pid) with ${flags:-default flags}"
            return 0
        fi
        log "dockerd ${flags:-(default flags)} did not work; last log lines:"
        tail -5 "$LOG" >&2 || true
        stop_dockerd "$pid"
    done
    die "no dockerd configuration worked; see $LOG"
}

main() {
    ensure_haproxy
    if engine_up; then
        build_image
    else
        ensure_docker_packages
        # A daemon may still be starting (another caller, or a restart): give it its chance before
        # starting a second one that would fight over /var/run/docker.pid.
        if dockerd_running && wait_engine ""; then
            build_image
        else
            start_dockerd
        fi
    fi
    smoke_test || die "docker run $IMAGE failed on the running engine"
    echo "docker ready: $(docker version --format '{{.Server.Version}}'), image orca-test/busybox"
}

main "$@"
