#!/usr/bin/env bash
# Build the local image orca-test/web: a keep-alive HTTP server with WebSocket echo, for the ingress tests
# and benchmarks (busybox httpd, in orca-test/busybox, closes every connection and has no WebSocket).
#
# No registry: `apt-get download` fetches Debian's websocketd (Go's net/http: HTTP/1.1 keep-alive,
# WebSocket), it is unpacked into an empty root with the host's libc it links against and busybox-static,
# and the tree is `docker import`ed. Idempotent: an existing image is kept. Needs Docker.
#
# What a container of it serves on port 8080 (CMD; `web-serve` is the entry point):
#   GET /           its hostname (a static file: keep-alive, no fork per request)
#   GET /headers    the request's headers as CGI variables (HTTP_X_FORWARDED_FOR=...), one per line
#   GET /sleep?S    answers after S seconds (a CGI script), for drains and least-connections
#   WebSocket /     echoes every text line back (`cat` per connection)
# Last line printed: `web image ready: orca-test/web`.
set -euo pipefail

IMAGE="orca-test/web:latest"
log() { echo "ensure-web-image: $*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "web image ready: orca-test/web"
    exit 0
fi
[ -x /bin/busybox ] || { log "busybox-static missing: run scripts/ensure-docker.sh first"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root/bin" "$root/www" "$root/cgi" "$root/tmp" "$root/etc"
(cd "$work" && timeout 300 apt-get download -q websocketd >/dev/null 2>&1) \
    || { apt-get update -q >/dev/null 2>&1 || true
         (cd "$work" && timeout 300 apt-get download -q websocketd >/dev/null); }
dpkg-deb -x "$work"/websocketd_*.deb "$root"
rm -rf "$root/usr/share"
ldd "$root/usr/bin/websocketd" | awk '/=> \//{print $3} /^[ \t]*\/lib/{print $1}' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
cp /bin/busybox "$root/bin/busybox"
for applet in sh cat echo env sleep hostname sort; do ln -sf busybox "$root/bin/$applet"; done
cat > "$root/cgi/headers" <<'CGI'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
echo "name=$(hostname)"
env | sort | while IFS= read -r line; do case "$line" in HTTP_*|REMOTE_ADDR=*) echo "$line" ;; esac; done
CGI
cat > "$root/cgi/sleep" <<'CGI'
#!/bin/sh
sleep "${QUERY_STRING:-1}"
printf 'Content-Type: text/plain\r\n\r\n'
hostname
CGI
cat > "$root/bin/web-serve" <<'SH'
#!/bin/sh
# The container's entry point: the hostname as the index, then websocketd on 8080 (or $1).
hostname > /www/index.html
exec /usr/bin/websocketd --port "${1:-8080}" --staticdir /www --cgidir /cgi --loglevel error /bin/cat
SH
chmod 755 "$root/cgi/headers" "$root/cgi/sleep" "$root/bin/web-serve"
chmod 1777 "$root/tmp"

tar -C "$root" -cf "$work/rootfs.tar" .
docker import -c 'ENV PATH=/usr/bin:/bin' -c 'CMD ["/bin/web-serve"]' "$work/rootfs.tar" "$IMAGE" >/dev/null
echo "web image ready: orca-test/web"
