#!/usr/bin/env bash
# Start the local cluster: three masters (cluster/node1..3.toml) and one agent on the local Docker engine
# (cluster/agent1.toml, node worker-1), in the background, and print how to use it. With --node it is
# the entry point of one host of a cluster spread over several (docs/three-hosts.md).
#
#   scripts/bootstrap-cluster.sh                         start the masters, wait for a leader, start worker-1
#   scripts/bootstrap-cluster.sh --status                one health line per master and per agent
#   scripts/bootstrap-cluster.sh --stop                  stop the agents (their containers keep running),
#                                                        then the masters: SIGTERM, up to 10 s, then SIGKILL
#   scripts/bootstrap-cluster.sh --stop --purge          the same, then remove the agents' containers
#
# One host of several (on each host with its own files; --status and --stop take the same options):
#   scripts/bootstrap-cluster.sh --node FILE [--agent FILE] [--secret-file PATH] [--wait] [--data-dir DIR]
#     --node FILE          only the master of FILE (repeatable); no agent unless --agent is given
#     --agent FILE         also exactly the agent of FILE (its token_file is minted from the secret if absent)
#     --secret-file PATH   the cluster secret, the SAME file on every host (copy data/cluster.secret of the
#                          first host to the others): copied (0600) to the config's cluster_secret_file
#                          when that is absent; a different secret already there is an error
#     --wait               wait (up to 30 s) for a leader, and with --agent for the agent to be ready.
#                          Default with --node: return once the local master answers, printing "waiting
#                          for peers" while there is no leader (the other hosts may not be up yet)
#   --no-wait              (without --node) start everything but wait for no leader and no agent
#   --data-dir DIR         pid files, logs and the admin token go there (default: data/)
#
# Agents are worker-1 (or the --agent config) and, without --node, any other with a pid file
# data/<id>.pid (like the walkthrough's worker-2, started with `orca join`); --purge removes the containers
# labelled orca.node=<id> of worker-1 and of every agent with a pid or token file data/<id>.{pid,token}.
#
# Runs from anywhere; works in the repository root, where the configs' relative paths (./data/...) point
# (relative --node/--agent/--secret-file/--data-dir paths mean what they mean where it is called, and
# a file that is not there is looked for in the repository root).
# Idempotent: creates .venv and installs only when needed, generates data/cluster.secret,
# data/admin.token and data/worker-1.token only when absent, and skips a master or agent whose pid file
# names a live `orca server` / `orca agent`.
# Files: data/<id>.pid and data/<id>.log (ids master-1..3 and worker-1), data/cluster.secret,
# data/admin.token and data/worker-1.token (all 0600); ~/.orca/token gets a copy of the admin token
# unless it already exists. The client context `local` (ORCA_CONTEXT_NAME) in ~/.orca/config.toml
# (ORCA_CONFIG) is written and made current: every master's URL (learned from the cluster) and the
# admin token file, so `orca` reaches the cluster through any master that is up.
#
# One command from nothing: before starting anything, the start form (not --node without --agent) checks
# what the machine needs: a Python >= 3.11 with venv, a Docker engine that answers (DOCKER_HOST or the
# default socket) with the test image orca-test/busybox, HAProxy when the agent runs the ingress
# proxy ([agent.proxy]), and root with `nft` when it runs the service mesh ([agent.mesh]: addresses on lo,
# an nftables table). As root it installs what is missing: python3-venv, haproxy and nftables from Debian,
# the engine and the image through scripts/ensure-docker.sh (ORCA_ENSURE_DOCKER names another script,
# for tests). As another user it changes nothing: it prints the exact commands to run (with sudo),
# then this script again, and exits 1.
set -euo pipefail

LEADER_WAIT_S=30
AGENT_WAIT_S=20
STOP_WAIT_S=10
START_WAIT_S=20      # --node without --wait: how long a master just started has to answer its API
DEFAULT_CONFIGS=(cluster/node1.toml cluster/node2.toml cluster/node3.toml)
AGENT_CONFIG=cluster/agent1.toml
TEST_IMAGE="orca-test/busybox"

usage() {
    sed -n '5,27s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

ORIG_PWD=$(pwd)
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ORCA_LOG_NAME=bootstrap
orca_cd_root
ROOT=$(pwd)

action=start
purge=0
configs=()
agent_arg=""
secret_arg=""
data_arg=""
wait_arg=""
# Options that take a value accept both `--opt VALUE` and `--opt=VALUE`.
need_value() {
    [ "$2" -ge 2 ] || { echo "bootstrap: $1 needs a value" >&2; exit 2; }
}
while [ $# -gt 0 ]; do
    case $1 in
        --stop) action=stop ;;
        --status) action=status ;;
        --purge) purge=1 ;;
        --wait) wait_arg=1 ;;
        --no-wait) wait_arg=0 ;;
        --node) need_value "$1" $#; configs+=("$2"); shift ;;
        --node=*) configs+=("${1#--node=}") ;;
        --agent) need_value "$1" $#; agent_arg=$2; shift ;;
        --agent=*) agent_arg=${1#--agent=} ;;
        --secret-file) need_value "$1" $#; secret_arg=$2; shift ;;
        --secret-file=*) secret_arg=${1#--secret-file=} ;;
        --data-dir) need_value "$1" $#; data_arg=$2; shift ;;
        --data-dir=*) data_arg=${1#--data-dir=} ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bootstrap: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
explicit_nodes=$(( ${#configs[@]} > 0 ))
[ "$explicit_nodes" = 1 ] || configs=("${DEFAULT_CONFIGS[@]}")
if [ "$purge" = 1 ]; then
    [ "$action" = stop ] || { echo "bootstrap: --purge goes with --stop" >&2; exit 2; }
    [ "$explicit_nodes" = 0 ] || { echo "bootstrap: --purge concerns the agent: not with --node" >&2; exit 2; }
fi
# Waiting for a leader is the default of the local cluster; with --node the other hosts may not be up.
wait_leader=${wait_arg:-$(( 1 - explicit_nodes ))}

# A relative path given on the command line means what it means in the caller's directory (a file not
# found there: in the repository root, e.g. cluster/node2.toml); the processes run in the repository
# root, so such a path becomes absolute (or root-relative when it lies inside the repo). Prints the
# result; $2 = -d for a directory that may not exist yet.
resolve_arg() {
    local p=$1
    if [[ $p != /* ]]; then
        if [ "${2:-}" = -d ] || [ -f "$ORIG_PWD/$p" ] || [ ! -f "$ROOT/$p" ]; then
            p="$ORIG_PWD/$p"
        else
            p="$ROOT/$p"
        fi
    fi
    if [ "${2:-}" = -d ]; then
        mkdir -p "$p" || orca_die "cannot create the directory $1"
        p=$(cd "$p" && pwd)
    else
        [ -f "$p" ] || orca_die "no such file: $1"
        p="$(cd "$(dirname "$p")" && pwd)/$(basename "$p")"
    fi
    [ "$p" = "$ROOT" ] || p=${p#"$ROOT"/}
    echo "$p"
}
for i in "${!configs[@]}"; do
    configs[i]=$(resolve_arg "${configs[$i]}") || exit 1
done
AGENT_GIVEN=0
if [ -n "$agent_arg" ]; then
    AGENT_CONFIG=$(resolve_arg "$agent_arg") || exit 1
    AGENT_GIVEN=1
fi
SECRET_SOURCE=""
[ -z "$secret_arg" ] || SECRET_SOURCE=$(resolve_arg "$secret_arg") || exit 1
DATA_DIR=data
[ -z "$data_arg" ] || DATA_DIR=$(resolve_arg "$data_arg" -d) || exit 1
TOKEN_FILE=$DATA_DIR/admin.token
CA_FILE=""  # the cluster CA of HTTPS masters (set from the first https master config)
CONTEXT_NAME=${ORCA_CONTEXT_NAME:-local}   # the client context the bootstrap writes (orca context)

# ---------------------------------------------------------------------- helpers

# A Python that has tomllib: the venv's, else any 3.11+ (enough for --stop/--status without a venv).
pick_python() {
    if [ -x "$ORCA_VENV/bin/python" ] && orca_python_ok "$ORCA_VENV/bin/python"; then
        PY=$ORCA_VENV/bin/python
    else
        PY=$(orca_find_python) || orca_die "no Python >= 3.11 found"
    fi
}

# Prints "<node id> TAB <API URL> TAB <cluster secret file>" of one master config. `orca server` does
# the strict validation; this only needs the three values.
read_config() {
    "$PY" - "$1" <<'EOF'
import sys, tomllib
path = sys.argv[1]
try:
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    node_id = cfg["node"]["id"]
    listen = cfg["api"]["listen"]
    host = listen.rsplit(":", 1)[0].strip("[]")
    # TLS unless said otherwise: on by default off loopback (orca.config has the same rule).
    tls_on = cfg.get("tls", {}).get("enabled", host not in ("127.0.0.1", "localhost", "::1")
                                    and not host.startswith("127.")
                                    and not cfg["security"].get("insecure_http", False))
    url = cfg["api"].get("advertise") or ("https://" if tls_on else "http://") + listen
    secret = cfg["security"]["cluster_secret_file"]
    data_dir = cfg["node"]["data_dir"]
except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as exc:
    sys.exit(f"bootstrap: {path}: cannot read node.id, api.advertise and security.cluster_secret_file: {exc!r}")
print(node_id, url.rstrip("/"), secret, data_dir, sep="\t")
EOF
}

# One GET of URL/api/v1/health. Prints "state TAB leader_id TAB leader_url TAB ready TAB term TAB status"
# ("-" for none) and succeeds, or prints the reason and fails.
health() {
    "$PY" - "$1" <<'EOF'
import json, ssl, sys, urllib.request
# Liveness only (no token is sent): an HTTPS master is not verified here; it may still be answering
# with the provisional certificate it uses before the cluster's CA exists.
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
try:
    with urllib.request.urlopen(sys.argv[1] + "/api/v1/health", timeout=1.0, context=ctx) as resp:
        h = json.load(resp)
except Exception as exc:  # anything at all means "not answering"; the reason is printed
    print(getattr(exc, "reason", None) or exc)
    sys.exit(1)
f = lambda v: "-" if v is None or v == "" else ("yes" if v is True else "no" if v is False else v)
print(*(f(h.get(k)) for k in ("state", "leader_id", "leader_url", "cluster_ready", "term", "status")), sep="\t")
EOF
}

# Alive means a process that exists and is not a zombie (our pid 1 may not reap orphans).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# Prints the pid in pid file $1 if it names a live `orca <$2>` ($2 an ERE alternative: `server` unless
# given, `agent|join` for agents; not a recycled pid), else fails.
running_pid() {
    local pid
    [ -f "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -Eq "orca (${2:-server}) " || return 1
    echo "$pid"
}

# Prints "<id> TAB <token_file> TAB <listen> TAB <status_listen>" of the agent config $1.
read_agent_config() {
    "$PY" - "$1" <<'EOF2'
import sys, tomllib
path = sys.argv[1]
try:
    with open(path, "rb") as f:
        agent = tomllib.load(f)["agent"]
    fields = (agent["id"], agent["token_file"], agent.get("listen", "127.0.0.1:6890"),
              agent.get("status_listen", "127.0.0.1:9100"))
except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as exc:
    sys.exit(f"bootstrap: {path}: cannot read agent.id and agent.token_file: {exc!r}")
print(*fields, sep="\t")
EOF2
}

# True if something accepts TCP connections on HOST:PORT $1.
listening() {
    "$PY" - "$1" <<'EOF2'
import socket, sys
host, _, port = sys.argv[1].rpartition(":")
try:
    socket.create_connection((host.strip("[]"), int(port)), timeout=1.0).close()
except (OSError, ValueError):
    sys.exit(1)
EOF2
}

# Asks the Docker engine the agent would use (the docker SDK, DOCKER_HOST or the default socket) for
# the test image. Prints "ok", "no-image", or "down <reason>"; needs the venv's Python.
docker_check() {
    timeout 20 "$ORCA_VENV/bin/python" - "$TEST_IMAGE" <<'EOF2' || echo "down the check failed or timed out"
import sys
def why(exc):
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
try:
    import docker
    client = docker.from_env(timeout=5)
    client.ping()
except Exception as exc:  # any failure at all means "no engine answers"; the reason is printed
    print("down", why(exc))
    sys.exit(0)
try:
    client.images.get(sys.argv[1])
    print("ok")
except docker.errors.ImageNotFound:
    print("no-image")
except Exception as exc:
    print("down", why(exc))
EOF2
}

# Prints the cluster's view of node $2 ("status eligibility allocations heartbeat_epoch", or
# "unknown") asked of the master at URL $1 with the admin token; fails when the cluster cannot be
# asked. The status alone proves nothing fresh: after a restart of the masters the replicated state
# says "ready" for a while (one lease of grace) whether or not the agent runs; the heartbeat time does.
node_state() {
    "$PY" - "$1" "$2" "$TOKEN_FILE" "$CA_FILE" <<'EOF2'
import json, ssl, sys, urllib.request
from datetime import datetime
url, node_id, token_file, ca_file = sys.argv[1:5]
try:
    with open(token_file) as f:
        token = f.read().strip()
    ctx = ssl.create_default_context(cafile=ca_file) if url.startswith("https://") else None
    req = urllib.request.Request(url + "/api/v1/cluster/nodes", headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=2.0, context=ctx) as resp:
        nodes = json.load(resp)["nodes"]
except (OSError, ValueError, KeyError) as exc:
    print(getattr(exc, "reason", None) or exc)
    sys.exit(1)
node = next((n for n in nodes if n.get("id") == node_id), None)
if node is None:
    print("unknown")
else:
    try:
        beat = datetime.fromisoformat(node["last_heartbeat"].replace("Z", "+00:00")).timestamp()
    except (KeyError, AttributeError, TypeError, ValueError):
        beat = 0
    print(node.get("status"), node.get("eligibility"), node.get("allocations"), int(beat))
EOF2
}

# Sends SIGTERM to the live processes named by pid files "$@" (they must be `orca $kind`, kind set by
# the caller), waits up to STOP_WAIT_S in all, then SIGKILLs what is left; removes the pid files.
# Prints one line per process; fails if there was none.
stop_pid_files() {
    local f pid pids=() names=() i deadline
    for f in "$@"; do
        [ -f "$f" ] || continue
        if pid=$(running_pid "$f" "$kind"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid") names+=("$(basename "$f" .pid)")
        else
            echo "$(basename "$f" .pid): not running (stale pid file removed)"
            rm -f "$f"
        fi
    done
    deadline=$((SECONDS + STOP_WAIT_S))
    for i in "${!pids[@]}"; do
        while alive "${pids[$i]}" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        if alive "${pids[$i]}"; then
            kill -KILL "${pids[$i]}" 2>/dev/null || true
            echo "${names[$i]}: killed (pid ${pids[$i]}, still running ${STOP_WAIT_S} s after SIGTERM)"
        else
            echo "${names[$i]}: stopped (pid ${pids[$i]})"
        fi
        rm -f "$DATA_DIR/${names[$i]}.pid"
    done
    [ ${#pids[@]} -gt 0 ]
}

load_nodes() {
    ids=() urls=() secrets=()
    local c line id url secret
    for c in "${configs[@]}"; do
        line=$(read_config "$c") || exit 1
        IFS=$'\t' read -r id url secret data_dir <<<"$line"
        ids+=("$id") urls+=("$url") secrets+=("$secret")
        # HTTPS masters: the cluster CA their first leader made, as the master writes it (tokens are
        # only ever sent to a master verified against it).
        case $url in https://*) [ -n "$CA_FILE" ] || CA_FILE="$data_dir/tls/ca.crt" ;; esac
    done
}

show_log_tails() {
    local id
    for id in "$@"; do
        echo "----- last lines of $DATA_DIR/$id.log -----" >&2
        tail -n 15 "$DATA_DIR/$id.log" >&2 2>/dev/null || echo "(no log)" >&2
    done
}

# ---------------------------------------------------------------------- prerequisites

ENSURE_DOCKER=${ORCA_ENSURE_DOCKER:-scripts/ensure-docker.sh}

# Asks the Docker engine the agent would use (DOCKER_HOST, else the default socket) for the test image,
# with the standard library only (no venv yet). Prints "ok", "no-image", "access <reason>" (the engine
# refuses this user) or "down <reason>". A DOCKER_HOST other than unix:// or tcp:// is not checked here
# ("ok"): the agent's own check decides.
docker_prereq() {
    "$1" - "$TEST_IMAGE" <<'EOF2'
import http.client, os, socket, sys
image = sys.argv[1]
host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=5)
        self.unix_path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.unix_path)

def get(path):
    if host.startswith("unix://"):
        conn = UnixConnection(host[len("unix://"):])
    else:
        conn = http.client.HTTPConnection(host[len("tcp://"):], timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read(65536)
        return resp.status
    finally:
        conn.close()

if not host.startswith(("unix://", "tcp://")) or os.environ.get("DOCKER_TLS_VERIFY"):
    print("ok")
    sys.exit()
try:
    if get("/_ping") != 200:
        print("down", host, "does not answer /_ping with 200")
    else:
        status = get(f"/images/{image}/json")
        print("ok" if status == 200 else "no-image" if status == 404 else f"down image lookup answered {status}")
except PermissionError as exc:
    print("access", f"{host}: {exc.strerror or exc}")
except (OSError, http.client.HTTPException) as exc:
    print("down", f"{host}: {getattr(exc, 'strerror', None) or exc}")
EOF2
}

# True if the agent config $1 turns on the ingress proxy, which runs HAProxy.
agent_wants_haproxy() {
    grep -Eq '^[[:space:]]*\[agent\.proxy\]' "$1"
}

# True if the agent config $1 turns on the service mesh, which needs root (addresses on lo, an nftables table).
agent_wants_mesh() {
    grep -Eq '^[[:space:]]*\[agent\.mesh\]' "$1"
}

have_haproxy() {
    command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ]
}

# What the start form needs before it starts anything (see the header). Root: installs what is missing.
# Anyone else: prints the exact commands and exits 1, having changed nothing.
ensure_prereqs() {
    local want_agent=$1 py="" state="" pkgs=() cmds=() root=0 why="" mesh_needs_root=0
    [ "$(id -u)" -eq 0 ] && root=1
    if [ ! -x "$ORCA_VENV/bin/python" ] || ! orca_python_ok "$ORCA_VENV/bin/python"; then
        py=$(orca_find_python) || pkgs+=(python3-venv)
    fi
    if [ "$want_agent" = 1 ] && agent_wants_haproxy "$AGENT_CONFIG" && ! have_haproxy; then
        if [ -x scripts/ensure-haproxy.sh ]; then  # the ingress's own installer, when it has one
            if [ "$root" = 1 ]; then
                scripts/ensure-haproxy.sh >&2 || orca_die "scripts/ensure-haproxy.sh failed (above)"
            else
                cmds+=("sudo scripts/ensure-haproxy.sh   # HAProxy, the agent's ingress proxy")
            fi
        else
            pkgs+=(haproxy)
        fi
    fi
    if [ "$want_agent" = 1 ] && agent_wants_mesh "$AGENT_CONFIG"; then
        if [ "$root" = 1 ]; then
            command -v nft >/dev/null || pkgs+=(nftables)
        else
            mesh_needs_root=1
        fi
    fi
    if [ ${#pkgs[@]} -gt 0 ]; then
        if [ "$root" = 1 ]; then
            orca_log "installing ${pkgs[*]} (Debian packages this machine lacks)"
            orca_apt_install "${pkgs[@]}" || orca_die "apt-get install ${pkgs[*]} failed"
            pkgs=()
        else
            cmds+=("sudo apt-get install -y ${pkgs[*]}")
        fi
    fi
    [ -n "$py" ] || py=$(orca_find_python) || py=""
    if [ "$want_agent" = 1 ]; then
        if [ -n "$py" ]; then
            state=$(docker_prereq "$py") || state="down the check failed"
        else
            state="down not checked (no Python yet)"
        fi
        case $state in
            ok) ;;
            access*)
                why=${state#access }
                [ "$root" = 1 ] && orca_die "the Docker engine refuses root: $why"
                cmds+=("sudo usermod -aG docker $(id -un)   # then log out and in again (the engine refuses you: $why)") ;;
            *)
                why=${state#down }
                [ "$state" = no-image ] && why="no image $TEST_IMAGE"
                if [ "$root" = 1 ]; then
                    orca_log "Docker: $why; running $ENSURE_DOCKER (installs docker.io and busybox-static from Debian when missing, starts dockerd, builds $TEST_IMAGE)"
                    "$ENSURE_DOCKER" >&2 || orca_die "$ENSURE_DOCKER failed (above)"
                    state=$(docker_prereq "$py") || state="down the check failed"
                    [ "$state" = ok ] || orca_die "after $ENSURE_DOCKER the Docker engine still says: $state (DOCKER_HOST=${DOCKER_HOST:-unset})"
                else
                    cmds+=("sudo scripts/ensure-docker.sh   # Docker: $why")
                fi ;;
        esac
    fi
    if [ "$mesh_needs_root" = 1 ]; then
        {
            echo
            echo "worker-1 runs the service mesh ([agent.mesh] in $AGENT_CONFIG: addresses on lo and an nftables"
            echo "table), which only root may set up. Run this script as root (it also installs what is missing):"
            [ "$ORIG_PWD" = "$ROOT" ] || echo "  cd $ROOT"
            echo "  sudo scripts/bootstrap-cluster.sh"
            echo "or delete the [agent.mesh] section from $AGENT_CONFIG to run without the mesh${cmds[0]:+, after:}"
            [ ${#cmds[@]} -eq 0 ] || printf '  %s\n' "${cmds[@]}"
            echo "Nothing was started."
        } >&2
        exit 1
    fi
    [ ${#cmds[@]} -eq 0 ] && return 0
    {
        echo
        echo "This machine lacks what the local cluster needs, and only root can install it. Run:"
        [ "$ORIG_PWD" = "$ROOT" ] || echo "  cd $ROOT"
        printf '  %s\n' "${cmds[@]}"
        echo "  scripts/bootstrap-cluster.sh"
        echo "(or run this script as root: it installs all of it itself). Nothing was started."
    } >&2
    exit 1
}

# ---------------------------------------------------------------------- actions

do_status() {
    pick_python
    load_nodes
    local i pid out rc=0 state leader leader_url ready term status url="" beat _
    for i in "${!ids[@]}"; do
        if pid=$(running_pid "$DATA_DIR/${ids[$i]}.pid"); then pid="pid $pid"; else pid="not running"; fi
        if out=$(health "${urls[$i]}"); then
            IFS=$'\t' read -r state leader leader_url ready term status <<<"$out"
            printf '%-10s %-17s %-24s %-9s leader=%-10s term=%-4s ready=%-3s %s\n' \
                "${ids[$i]}" "$pid" "${urls[$i]}" "$state" "$leader" "$term" "$ready" "$status"
            [ "$ready" = yes ] || rc=1
            [ -n "$url" ] || url=${urls[$i]}
        else
            printf '%-10s %-17s %-24s not answering (%s)\n' "${ids[$i]}" "$pid" "${urls[$i]}" "$out"
            rc=1
        fi
    done
    [ "$explicit_nodes" = 0 ] || [ "$AGENT_GIVEN" = 1 ] || return "$rc"

    # The agents: worker-1 (or the --agent one) and, without --node, any other with a pid file under
    # data/ (the walkthrough's worker-2): the process, and what the cluster says of the node (asked of an
    # answering master).
    local line agent_id listen node f agents=() addr=()
    line=$(read_agent_config "$AGENT_CONFIG") || exit 1
    IFS=$'\t' read -r agent_id _ listen _ <<<"$line"
    agents=("$agent_id") addr=("http://$listen")
    shopt -s nullglob
    [ "$explicit_nodes" = 1 ] || for f in "$DATA_DIR"/*.pid; do
        f=$(basename "$f" .pid)
        case $f in master-* | "$agent_id") ;; *) agents+=("$f") addr+=("-") ;; esac
    done
    shopt -u nullglob
    for i in "${!agents[@]}"; do
        if pid=$(running_pid "$DATA_DIR/${agents[$i]}.pid" 'agent|join'); then pid="pid $pid"; else pid="not running"; fi
        if [ -z "$url" ]; then
            node="cluster not answering"
        elif [ ! -s "$TOKEN_FILE" ]; then
            node="(no $TOKEN_FILE to ask the cluster with)"
        elif out=$(node_state "$url" "${agents[$i]}"); then
            if [ "$out" = unknown ]; then
                node="not registered"
            else
                read -r state ready term beat <<<"$out"
                node="node=$state eligibility=$ready allocations=$term last-heartbeat=$(($(date +%s) - beat))s-ago"
            fi
        else
            node="cluster not answering ($out)"
        fi
        printf '%-10s %-17s %-24s %s\n' "${agents[$i]}" "$pid" "${addr[$i]}" "$node"
        [ "$i" -gt 0 ] || [ "$pid" != "not running" ] || rc=1
    done
    return "$rc"
}

# Removes every container (running or not) labelled orca.node=<agent id $1> from the local engine.
purge_containers() {
    "$ORCA_VENV/bin/python" - "$1" <<'EOF2'
import sys
import docker
node = sys.argv[1]
try:
    client = docker.from_env(timeout=30)
    found = client.containers.list(all=True, filters={"label": f"orca.node={node}"})
except Exception as exc:
    sys.exit(f"bootstrap: cannot list the containers of {node}: {exc}")
for c in found:
    try:
        c.remove(force=True)
        print(f"{node}: removed container {c.name}")
    except Exception as exc:
        print(f"{node}: cannot remove container {c.name}: {exc}", file=sys.stderr)
if not found:
    print(f"{node}: no container to remove")
EOF2
}

do_stop() {
    local files=() agent_files=() purge_ids=() i kind agent_id line f _
    pick_python
    if [ "$explicit_nodes" = 1 ]; then
        load_nodes
        for i in "${!ids[@]}"; do files+=("$DATA_DIR/${ids[$i]}.pid"); done
        if [ "$AGENT_GIVEN" = 1 ]; then
            line=$(read_agent_config "$AGENT_CONFIG") || exit 1
            IFS=$'\t' read -r agent_id _ <<<"$line"
            kind='agent|join'
            stop_pid_files "$DATA_DIR/$agent_id.pid" || echo "$agent_id: not running"
        fi
    else
        # Agents first: SIGTERM makes an agent exit and leaves its containers running (by design: an
        # agent started again re-adopts them). Agents are worker-1 and any other pid file under data/
        # that is not a master's, such as the walkthrough's worker-2.
        line=$(read_agent_config "$AGENT_CONFIG") || exit 1
        IFS=$'\t' read -r agent_id _ <<<"$line"
        purge_ids=("$agent_id")
        shopt -s nullglob
        for f in "$DATA_DIR"/*.pid; do
            case $(basename "$f") in
                master-*) files+=("$f") ;;
                *) agent_files+=("$f") ;;
            esac
        done
        # --purge: the containers of worker-1 and of every agent with a pid file or a token file
        # under data/ (the walkthrough's worker-2 has both; its pid file may be gone, its token stays).
        for f in "$DATA_DIR"/*.pid "$DATA_DIR"/*.token; do
            f=$(basename "${f%.*}")
            case $f in master-* | admin) continue ;; esac
            case " ${purge_ids[*]} " in *" $f "*) continue ;; esac
            purge_ids+=("$f")
        done
        shopt -u nullglob
        kind='agent|join'
        stop_pid_files "${agent_files[@]}" || echo "no agent running from pid files under $DATA_DIR/"
    fi
    kind=server
    stop_pid_files "${files[@]}" || echo "no master running from pid files under $DATA_DIR/: nothing to stop"
    if [ "$purge" = 1 ]; then
        if [ -x "$ORCA_VENV/bin/python" ]; then
            for agent_id in "${purge_ids[@]}"; do purge_containers "$agent_id"; done
        else
            echo "no $ORCA_VENV, so no agent ever ran from here: no container to remove"
        fi
    fi
}

# --secret-file: the cluster's secret file, made on one host and copied to the others, becomes the
# config's cluster_secret_file ($1). Never replaced: the Raft password and every token derive from it.
install_secret() {
    local secret=$1
    [ -s "$SECRET_SOURCE" ] || orca_die "--secret-file $SECRET_SOURCE is empty"
    if [ -s "$secret" ]; then
        if "$PY" - "$SECRET_SOURCE" "$secret" <<'EOF2'; then
import sys
from pathlib import Path
a, b = (Path(p).read_bytes().strip() for p in sys.argv[1:3])
sys.exit(a != b)
EOF2
            return 0
        fi
        orca_die "$secret holds another cluster secret than $SECRET_SOURCE: not replacing it (the Raft password and every token derive from it). If this host belongs to the cluster of $SECRET_SOURCE: stop it, remove $secret and its masters' data_dir, then run this again"
    fi
    mkdir -p "$(dirname "$secret")"
    (umask 077 && cp "$SECRET_SOURCE" "$secret.tmp")
    chmod 600 "$secret.tmp"
    mv "$secret.tmp" "$secret"
    orca_log "installed the cluster secret $SECRET_SOURCE as $secret"
}

ensure_secret() {
    local secret=$1
    if [ -n "$SECRET_SOURCE" ]; then
        install_secret "$secret"
        return 0
    fi
    [ -s "$secret" ] && return 0
    mkdir -p "$(dirname "$secret")"
    (umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(32))' >"$secret.tmp")
    chmod 600 "$secret.tmp"
    mv "$secret.tmp" "$secret"
    orca_log "generated the cluster secret $secret"
    if [ "$explicit_nodes" = 1 ]; then
        orca_log "every master of a cluster needs the SAME secret: copy $secret to the other masters' hosts and give it to this script there with --secret-file"
    fi
}

mint_admin_token() {
    local secret=$1
    (umask 077 && "$ORCA_VENV/bin/orca" token create --secret-file "$secret" --role admin \
        --name bootstrap-admin >"$TOKEN_FILE.tmp") || { rm -f "$TOKEN_FILE.tmp"; orca_die "minting the admin token failed"; }
    chmod 600 "$TOKEN_FILE.tmp"
    mv "$TOKEN_FILE.tmp" "$TOKEN_FILE"
    orca_log "minted an admin token into $TOKEN_FILE"
}

# The agent of AGENT_CONFIG is started before the masters: it registers as soon as there is a leader
# (it retries every 2 s at most). Started after the leader is known, it could (after a restart of the
# whole cluster, on a busy machine) miss the one lease of grace a new leader gives the nodes it knows,
# and its replicas would be replaced for nothing.
#
# launch_agent starts it unless it runs. It sets agent_id, agent_aid, agent_listen and agent_since
# (heartbeats older than that do not count), or agent_skip (why it was not started) when no Docker
# engine answers: not an error, the masters are up and useful, and the summary says what to do.
launch_agent() {
    local line token listen pid docker out
    line=$(read_agent_config "$AGENT_CONFIG") || exit 1
    IFS=$'\t' read -r agent_aid token listen agent_status_listen <<<"$line"
    agent_listen=$listen
    agent_id=("$agent_aid")
    agent_since=$(($(date +%s) - 5))

    if pid=$(running_pid "$DATA_DIR/$agent_aid.pid" 'agent|join'); then
        orca_log "$agent_aid already running (pid $pid)"
        return 0
    fi
    docker=$(docker_check)
    case $docker in
        ok) ;;
        no-image)
            if [ "$(id -u)" -eq 0 ]; then
                orca_log "the Docker engine has no image $TEST_IMAGE (examples/web.json runs it): building it with $ENSURE_DOCKER"
                "$ENSURE_DOCKER" >&2 \
                    || orca_log "WARNING: $ENSURE_DOCKER failed (above): services on $TEST_IMAGE will not start"
            else
                orca_log "WARNING: the Docker engine has no image $TEST_IMAGE (examples/web.json runs it):" \
                    "build it with 'sudo scripts/ensure-docker.sh'; starting $agent_aid anyway"
            fi ;;
        *)
            agent_id=()
            agent_skip=${docker#down }
            orca_log "no Docker engine answers ($agent_skip): not starting $agent_aid"
            return 0 ;;
    esac

    # A token signed with an earlier cluster secret (data/cluster.secret deleted on its own) would
    # only be refused at registration: check it offline and replace it.
    # A token minted before node identity (no node claim) or for another node is replaced the same way.
    if [ -s "$token" ] && ! "$PY" - "$secret" "$token" "$agent_aid" <<'EOF2'; then
import sys
from pathlib import Path
from orca.auth import signing_key, verify_token
try:
    claims = verify_token(signing_key(Path(sys.argv[1]).read_bytes().strip()), Path(sys.argv[2]).read_text().strip())
except Exception:
    sys.exit(1)
sys.exit(claims.role != "agent" or claims.node != sys.argv[3])
EOF2
        orca_log "$token is not an agent token of this cluster secret for node $agent_aid: minting a new one"
        rm -f "$token"
    fi
    if [ ! -s "$token" ]; then
        mkdir -p "$(dirname "$token")"
        (umask 077 && "$ORCA_VENV/bin/orca" token create --secret-file "$secret" --role agent \
            --node "$agent_aid" >"$token.tmp") || { rm -f "$token.tmp"; orca_die "minting the agent token failed"; }
        chmod 600 "$token.tmp"
        mv "$token.tmp" "$token"
        orca_log "minted an agent token into $token"
    fi
    for out in "$listen" "$agent_status_listen"; do
        if listening "$out"; then
            orca_die "$agent_aid: something already listens on $out but $DATA_DIR/$agent_aid.pid names no running agent (an agent started another way? stop it first; the masters are running)"
        fi
    done
    agent_since=$(($(date +%s) - 1))
    echo "=== $(date -Is) bootstrap: orca agent --config $AGENT_CONFIG" >>"$DATA_DIR/$agent_aid.log"
    nohup "$ORCA_VENV/bin/orca" agent --config "$AGENT_CONFIG" >>"$DATA_DIR/$agent_aid.log" 2>&1 </dev/null &
    echo $! >"$DATA_DIR/$agent_aid.pid"
    orca_log "started $agent_aid (pid $!, $AGENT_CONFIG, log $DATA_DIR/$agent_aid.log)"
}

# Waits (AGENT_WAIT_S) until the cluster, asked at URL $1, has the launched agent ready with a fresh
# heartbeat; sets agent_ok=1 and agent_line, or dies showing the agent's log.
wait_agent() {
    local url=$1 pid out="" deadline=$((SECONDS + AGENT_WAIT_S)) state beat _
    while :; do
        if ! pid=$(running_pid "$DATA_DIR/$agent_aid.pid" 'agent|join'); then
            rm -f "$DATA_DIR/$agent_aid.pid"
            show_log_tails "$agent_aid"
            orca_die "$agent_aid exited (its log is above; the masters are running)"
        fi
        # The status alone is not enough: see node_state.
        if out=$(node_state "$url" "$agent_aid"); then
            read -r state _ _ beat <<<"$out"
            [ "$state" = ready ] && [ "${beat:-0}" -ge "$agent_since" ] && break
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log_tails "$agent_aid"
            orca_die "$agent_aid not ready within ${AGENT_WAIT_S} s (the cluster says: ${out:-nothing}; log above; left running: inspect with --status, stop with --stop)"
        fi
        sleep 0.3
    done
    agent_ok=1
    agent_line="$agent_aid ready (pid $pid, $AGENT_CONFIG, API http://$agent_listen, containers on the local Docker engine)"
}

do_start() {
    local want_agent=0
    if [ "$explicit_nodes" = 0 ] || [ "$AGENT_GIVEN" = 1 ]; then want_agent=1; fi
    ensure_prereqs "$want_agent"
    orca_ensure_venv
    PY=$ORCA_VENV/bin/python
    load_nodes
    local secret=${secrets[0]} i pid started=() leader_line="" out state leader leader_url ready term status
    for i in "${!secrets[@]}"; do
        [ "${secrets[$i]}" = "$secret" ] || orca_die "${configs[$i]} names another cluster secret file (${secrets[$i]}, not $secret)"
    done
    mkdir -p "$DATA_DIR"
    ensure_secret "$secret"

    # The agent first. With --node only the --agent one: --node starts single masters, e.g. one per host.
    local agent_id=() agent_aid="" agent_listen="" agent_status_listen="" agent_since=0 agent_skip=""
    local agent_ok=0 agent_line=""
    if [ "$explicit_nodes" = 0 ] || [ "$AGENT_GIVEN" = 1 ]; then
        launch_agent
    fi

    for i in "${!ids[@]}"; do
        if pid=$(running_pid "$DATA_DIR/${ids[$i]}.pid"); then
            orca_log "${ids[$i]} already running (pid $pid)"
            continue
        fi
        if health "${urls[$i]}" >/dev/null; then
            orca_die "${ids[$i]}: something already answers on ${urls[$i]} but $DATA_DIR/${ids[$i]}.pid names no running master (a cluster started another way? stop it first)"
        fi
        # Appended, not truncated: the log of a master that died before this start stays readable.
        echo "=== $(date -Is) bootstrap: orca server --config ${configs[$i]}" >>"$DATA_DIR/${ids[$i]}.log"
        nohup "$ORCA_VENV/bin/orca" server --config "${configs[$i]}" >>"$DATA_DIR/${ids[$i]}.log" 2>&1 </dev/null &
        echo $! >"$DATA_DIR/${ids[$i]}.pid"
        started+=("$i")
        orca_log "started ${ids[$i]} (pid $!, ${configs[$i]}, log $DATA_DIR/${ids[$i]}.log)"
    done

    # Done when the leader is known and every master of this run answers: a master that lost its
    # port to another process would otherwise die unnoticed after a leader was already found.
    # Without waiting (--node's default), done when every master of this run answers: the leader is
    # reported if there is one already, else "waiting for peers".
    local deadline=$((SECONDS + LEADER_WAIT_S)) answering silent
    [ "$wait_leader" = 1 ] || deadline=$((SECONDS + START_WAIT_S))
    while :; do
        for i in "${started[@]}"; do
            if ! running_pid "$DATA_DIR/${ids[$i]}.pid" >/dev/null; then
                rm -f "$DATA_DIR/${ids[$i]}.pid"
                show_log_tails "${ids[$i]}"
                orca_die "${ids[$i]} exited right after starting (its log is above; a port in use?)"
            fi
        done
        leader_line="" answering=0 silent=""
        for i in "${!ids[@]}"; do
            if ! out=$(health "${urls[$i]}"); then
                silent+=" ${ids[$i]}"
                continue
            fi
            answering=$((answering + 1))
            IFS=$'\t' read -r state leader leader_url ready term status <<<"$out"
            if [ "$ready" = yes ] && [ "$leader" != - ]; then
                leader_line="$leader $leader_url $term"
            fi
        done
        [ -n "$leader_line" ] && [ "$answering" -eq "${#ids[@]}" ] && break
        [ "$wait_leader" = 0 ] && [ "$answering" -eq "${#ids[@]}" ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log_tails "${ids[@]}"
            if [ "$wait_leader" = 0 ]; then
                orca_die "${silent# } did not answer within ${START_WAIT_S} s (logs above; inspect with --status, stop with --stop)"
            fi
            if [ -n "$leader_line" ]; then
                orca_die "leader ${leader_line%% *} elected, but${silent} did not answer within ${LEADER_WAIT_S} s (logs above)"
            fi
            if [ "$explicit_nodes" = 1 ]; then
                orca_log "a master elects a leader only with a majority of its peers up: start the others too"
            fi
            orca_die "no leader within ${LEADER_WAIT_S} s (masters left running: inspect with --status, stop with --stop)"
        fi
        sleep 0.3
    done
    leader="" leader_url="" term=""
    [ -z "$leader_line" ] || read -r leader leader_url term <<<"$leader_line"

    if [ ! -s "$TOKEN_FILE" ]; then
        mint_admin_token "$secret"
    elif [ -n "$leader_url" ]; then
        # A token left over from an earlier secret (data/cluster.secret deleted on its own) would
        # only produce 401s later: check it once against the leader and replace it if refused.
        local code
        code=$("$PY" - "$leader_url" "$TOKEN_FILE" "$CA_FILE" <<'EOF2' || true
import ssl, sys, urllib.error, urllib.request
url, token_file, ca_file = sys.argv[1:4]
with open(token_file) as f:
    token = f.read().strip()
ctx = ssl.create_default_context(cafile=ca_file) if url.startswith("https://") else None
req = urllib.request.Request(url + "/api/v1/cluster/info", headers={"Authorization": "Bearer " + token})
try:
    with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
        print(resp.status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except OSError:
    print(0)
EOF2
)
        if [ "$code" = 401 ]; then
            orca_log "$TOKEN_FILE is refused by the cluster (made with another secret?): minting a new one"
            mint_admin_token "$secret"
        fi
    fi
    local home_token="$HOME/.orca/token" home_note
    if [ ! -e "$home_token" ]; then
        mkdir -p "$HOME/.orca"
        chmod 700 "$HOME/.orca"
        install -m 600 "$TOKEN_FILE" "$home_token"
        home_note="copied to $home_token, which the CLI reads when ORCA_TOKEN is unset"
    elif cmp -s "$TOKEN_FILE" "$home_token"; then
        home_note="same as $home_token"
    else
        home_note="$home_token exists and was left alone: export ORCA_TOKEN as below"
    fi

    local ca_note="" n
    if [ -n "$CA_FILE" ] && [ -n "$leader" ]; then
        # The master writes the cluster CA a moment after it applies it: wait for it (bounded).
        for n in $(seq 1 50); do [ -s "$CA_FILE" ] && break; sleep 0.1; done
    fi
    if [ -n "$CA_FILE" ] && [ -n "$leader" ] && [ -s "$CA_FILE" ]; then
        # The CLI reads ~/.orca/ca.crt when neither --cacert nor ORCA_CACERT is given.
        mkdir -p "$HOME/.orca"
        install -m 644 "$CA_FILE" "$HOME/.orca/ca.crt"
        ca_note="  cluster CA:  $CA_FILE (copied to $HOME/.orca/ca.crt; \`orca cluster ca show\` prints its fingerprint)"
    fi
    # The client context: every master of this cluster and the admin token file, so the CLI reaches
    # the cluster through any master that is up (env ORCA_API/ORCA_TOKEN still win over it).
    local context_note
    if context_note=$("$ORCA_VENV/bin/orca" context set "$CONTEXT_NAME" --use \
            --api "$(IFS=,; echo "${urls[*]}")" --token-file "$TOKEN_FILE" 2>&1); then
        context_note="${context_note%% (current)} (current; $("$ORCA_VENV/bin/python" -c \
            'from orca.sdk.config import config_path; print(config_path())'))"
    else
        context_note="not written: $context_note"
    fi

    if [ ${#agent_id[@]} -gt 0 ] && [ "$wait_leader" = 1 ]; then
        wait_agent "$leader_url"
    elif [ ${#agent_id[@]} -gt 0 ]; then
        pid=$(running_pid "$DATA_DIR/$agent_aid.pid" 'agent|join') || {
            rm -f "$DATA_DIR/$agent_aid.pid"
            show_log_tails "$agent_aid"
            orca_die "$agent_aid exited (its log is above; the masters are running)"
        }
        agent_line="$agent_aid started (pid $pid, $AGENT_CONFIG, API http://$agent_listen); it registers once there is a leader"
    elif [ -n "$agent_skip" ]; then
        agent_line="$agent_aid NOT started: no Docker engine answers"
    fi

    local cd_line="" orca=.venv/bin/orca masters leader_desc
    [ "$ORIG_PWD" = "$ROOT" ] || cd_line="  cd $ROOT"$'\n'
    masters=$(printf '%s ' "${urls[@]}" | sed 's/ $//')
    if [ -n "$leader" ]; then
        leader_desc="leader ${leader} (${leader_url}), term ${term}"
    else
        leader_desc="no leader yet: waiting for peers (a leader needs a majority of the masters up)"
        orca_log "${ids[*]} answering; no leader yet: waiting for peers"
    fi
    cat <<EOF

orca: ${ids[*]} running; ${leader_desc}
  agent:       ${agent_line:-not started (--node starts masters only, and an agent with --agent)}
  logs:        $(for i in "${ids[@]}" "${agent_id[@]}"; do printf '%s/%s.log ' "$DATA_DIR" "$i"; done | sed 's/ $//')
  pid files:   $DATA_DIR/<id>.pid
  admin token: ${TOKEN_FILE} (${home_note})
${ca_note}
  client:      ${context_note}
EOF
    if [ "$explicit_nodes" = 1 ]; then
        # The same options again, for --status and --stop (paths as this script resolved them).
        local again="" c
        for c in "${configs[@]}"; do again+=" --node $c"; done
        [ "$AGENT_GIVEN" = 0 ] || again+=" --agent $AGENT_CONFIG"
        [ "$DATA_DIR" = data ] || again+=" --data-dir $DATA_DIR"
        [ -z "$agent_skip" ] || cat <<EOF

No Docker engine answers ($agent_skip), so the agent $agent_aid was not started: run
'sudo scripts/ensure-docker.sh', then this command again (it starts only what is missing).
EOF
        cat <<EOF

Next:
${cd_line}  export ORCA_TOKEN=\$(cat ${TOKEN_FILE})   # or nothing: the context ${CONTEXT_NAME} names every master and the token
  $orca cluster info

Health:  scripts/bootstrap-cluster.sh${again} --status
Stop:    scripts/bootstrap-cluster.sh${again} --stop
EOF
        return 0
    fi
    if [ "$agent_ok" != 1 ]; then
        [ -z "$agent_skip" ] || cat <<EOF

No Docker engine answers ($agent_skip), so the agent $agent_aid was not started; the masters run.
To run containers:
  sudo scripts/ensure-docker.sh     # installs docker.io and busybox-static from Debian, starts dockerd,
                                    # builds the test image $TEST_IMAGE
  scripts/bootstrap-cluster.sh      # again: starts only what is missing (here: $agent_aid)
EOF
        cat <<EOF

Next:
${cd_line}  export ORCA_TOKEN=\$(cat ${TOKEN_FILE})
  $orca cluster info
Until an agent runs, the replicas of a deployed service stay pending.

Health:  scripts/bootstrap-cluster.sh --status
Stop:    scripts/bootstrap-cluster.sh --stop
EOF
        return 0
    fi
    cat <<EOF

Next (docs/walkthrough.md explains each step):
${cd_line}  export ORCA_TOKEN=\$(cat ${TOKEN_FILE})
  $orca deploy -f examples/web.json   # waits until both replicas run and pass their health check
  $orca status
  $orca ps web                        # PORT column: the host port of each replica
  curl http://127.0.0.1:PORT/                 # hello from <container id>
  curl -H 'Host: web.local' http://127.0.0.1:8080/   # the same service through worker-1's ingress proxy
  .venv/bin/orca top --once                    # replicas, requests/s, p95, CPU, memory
  $orca scale web 3
  $orca logs web --tail 20
  $orca nodes
With worker-1 alone a drain has nowhere to move replicas to: join a second agent first.
  (umask 077 && $orca cluster join-token worker --node worker-2 >$DATA_DIR/worker-2.token)
  nohup $orca join $masters --token-file $DATA_DIR/worker-2.token --id worker-2 --listen 127.0.0.1:6892 --status-listen 127.0.0.1:9102 >$DATA_DIR/worker-2.log 2>&1 & echo \$! >$DATA_DIR/worker-2.pid
  $orca drain worker-1                # replicas move to worker-2, start-before-stop
  $orca undrain worker-1
  kill -9 \$(cat $DATA_DIR/worker-2.pid)    # node loss: worker-2's replicas start on worker-1 within a few seconds
  $orca ps web

Health:  scripts/bootstrap-cluster.sh --status
Stop:    scripts/bootstrap-cluster.sh --stop           (agents first; their containers keep running)
         scripts/bootstrap-cluster.sh --stop --purge   (and remove the agents' containers)
EOF
}

case $action in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
esac
