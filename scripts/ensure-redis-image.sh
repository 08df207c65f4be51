#!/usr/bin/env bash
# Build the local image orca-test/redis (a real stateful server for the volume tests) from Debian packages.
#
# No registry: `apt-get download` fetches the redis-server, redis-tools, liblzf1 and libjemalloc2 .debs
# (no dpkg lock is taken, nothing is installed on the host), they are unpacked into an empty root, the host's
# shared libraries they link against (found with ldd) and busybox-static are copied next to them, and the
# tree is `docker import`ed. Idempotent: an existing image is kept. Needs Docker (scripts/ensure-docker.sh).
# Last line printed: `redis image ready: orca-test/redis`.
set -euo pipefail

IMAGE="orca-test/redis:latest"
log() { echo "ensure-redis-image: $*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "redis image ready: orca-test/redis"
    exit 0
fi
[ -x /bin/busybox ] || { log "busybox-static missing: run scripts/ensure-docker.sh first"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root/bin" "$root/data" "$root/tmp" "$root/etc"
(cd "$work" && timeout 300 apt-get download -q redis-server redis-tools liblzf1 libjemalloc2 >/dev/null 2>&1) \
    || { apt-get update -q >/dev/null 2>&1 || true
         (cd "$work" && timeout 300 apt-get download -q redis-server redis-tools liblzf1 libjemalloc2 >/dev/null); }
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$root"; done

# The host's copies of every library the binaries need that the packages did not bring.
libpath="$root/usr/lib/x86_64-linux-gnu:$root/usr/lib"
for bin in "$root/usr/bin/redis-check-rdb" "$root/usr/bin/redis-cli"; do
    LD_LIBRARY_PATH="$libpath" ldd "$bin" | awk '/=> \//{print $3} /^[ \t]*\/lib/{print $1}' | while read -r lib; do
        case "$lib" in "$root"*) continue ;; esac
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
done
cp /bin/busybox "$root/bin/busybox"
for applet in sh ls cat echo sleep; do ln -sf busybox "$root/bin/$applet"; done
echo "redis:x:999:999::/data:/bin/sh" > "$root/etc/passwd"
chmod 1777 "$root/tmp"

tar -C "$root" -cf "$work/rootfs.tar" .
docker import -c 'ENV PATH=/usr/bin:/bin' -c 'WORKDIR /data' \
    -c 'CMD ["/usr/bin/redis-server", "--dir", "/data", "--appendonly", "yes", "--protected-mode", "no"]' \
    "$work/rootfs.tar" "$IMAGE" >/dev/null
echo "redis image ready: orca-test/redis"
