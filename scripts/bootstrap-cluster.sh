#!/usr/bin/env bash
# Start the local three-master cluster (cluster/node1..3.toml) in the background and print how to use it.
#
#   scripts/bootstrap-cluster.sh                         start the three masters, wait for a leader
#   scripts/bootstrap-cluster.sh --node cluster/node2.toml   the same for only this master (repeatable)
#   scripts/bootstrap-cluster.sh --status                one health line per master
#   scripts/bootstrap-cluster.sh --stop                  SIGTERM, up to 10 s, then SIGKILL
#
# Runs from anywhere; works in the repository root, where the configs' relative paths (./data/...) point.
# Idempotent: creates .venv and installs only when needed, generates data/cluster.secret and
# data/admin.token only when absent, and skips a master whose pid file names a live `orca server`.
# Files: data/<node id>.pid and data/<node id>.log (node ids master-1..3), data/cluster.secret and
# data/admin.token (both 0600); ~/.orca/token gets a copy of the admin token unless it already exists.
set -euo pipefail

LEADER_WAIT_S=30
STOP_WAIT_S=10
TOKEN_FILE=data/admin.token
DEFAULT_CONFIGS=(cluster/node1.toml cluster/node2.toml cluster/node3.toml)

usage() {
    sed -n '2,7s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

ORIG_PWD=$(pwd)
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ORCA_LOG_NAME=bootstrap
orca_cd_root
ROOT=$(pwd)

action=start
configs=()
while [ $# -gt 0 ]; do
    case $1 in
        --stop) action=stop ;;
        --status) action=status ;;
        --node)
            [ $# -ge 2 ] || { echo "bootstrap: --node needs a config file" >&2; exit 2; }
            configs+=("$2")
            shift ;;
        --node=*) configs+=("${1#--node=}") ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bootstrap: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
explicit_nodes=$(( ${#configs[@]} > 0 ))
[ "$explicit_nodes" = 1 ] || configs=("${DEFAULT_CONFIGS[@]}")

# A relative --node path means what it means in the caller's directory; the masters run in the
# repository root, so such a path becomes absolute (or root-relative when it lies inside the repo).
for i in "${!configs[@]}"; do
    c=${configs[$i]}
    if [[ $c != /* ]] && [ -f "$ORIG_PWD/$c" ]; then
        c="$(cd "$(dirname "$ORIG_PWD/$c")" && pwd)/$(basename "$c")"
        c=${c#"$ROOT"/}
    fi
    [ -f "$c" ] || orca_die "no such config file: ${configs[$i]}"
    configs[i]=$c
done

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
    url = cfg["api"].get("advertise") or "http://" + cfg["api"]["listen"]
    secret = cfg["security"]["cluster_secret_file"]
except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as exc:
    sys.exit(f"bootstrap: {path}: cannot read node.id, api.advertise and security.cluster_secret_file: {exc!r}")
print(node_id, url.rstrip("/"), secret, sep="\t")
EOF
}

# One GET of URL/api/v1/health. Prints "state TAB leader_id TAB leader_url TAB ready TAB term TAB status"
# ("-" for none) and succeeds, or prints the reason and fails.
health() {
    "$PY" - "$1" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/api/v1/health", timeout=1.0) as resp:
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

# Prints the pid in pid file $1 if it names a live `orca server` (not a recycled pid), else fails.
running_pid() {
    local pid
    [ -f "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'orca server' || return 1
    echo "$pid"
}

load_nodes() {
    ids=() urls=() secrets=()
    local c line id url secret
    for c in "${configs[@]}"; do
        line=$(read_config "$c") || exit 1
        IFS=$'\t' read -r id url secret <<<"$line"
        ids+=("$id") urls+=("$url") secrets+=("$secret")
    done
}

show_log_tails() {
    local id
    for id in "$@"; do
        echo "----- last lines of data/$id.log -----" >&2
        tail -n 15 "data/$id.log" >&2 2>/dev/null || echo "(no log)" >&2
    done
}

# ---------------------------------------------------------------------- actions

do_status() {
    pick_python
    load_nodes
    local i pid out rc=0 state leader leader_url ready term status
    for i in "${!ids[@]}"; do
        if pid=$(running_pid "data/${ids[$i]}.pid"); then pid="pid $pid"; else pid="not running"; fi
        if out=$(health "${urls[$i]}"); then
            IFS=$'\t' read -r state leader leader_url ready term status <<<"$out"
            printf '%-10s %-17s %-24s %-9s leader=%-10s term=%-4s ready=%-3s %s\n' \
                "${ids[$i]}" "$pid" "${urls[$i]}" "$state" "$leader" "$term" "$ready" "$status"
            [ "$ready" = yes ] || rc=1
        else
            printf '%-10s %-17s %-24s not answering (%s)\n' "${ids[$i]}" "$pid" "${urls[$i]}" "$out"
            rc=1
        fi
    done
    return "$rc"
}

do_stop() {
    local files=() f pid pids=() names=() i deadline
    if [ "$explicit_nodes" = 1 ]; then
        pick_python
        load_nodes
        for i in "${!ids[@]}"; do files+=("data/${ids[$i]}.pid"); done
    else
        shopt -s nullglob
        files=(data/master-*.pid)
        shopt -u nullglob
    fi
    for f in "${files[@]}"; do
        [ -f "$f" ] || continue
        if pid=$(running_pid "$f"); then
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
        rm -f "data/${names[$i]}.pid"
    done
    [ ${#pids[@]} -gt 0 ] || echo "no master running from pid files under data/: nothing to stop"
}

ensure_secret() {
    local secret=$1
    [ -s "$secret" ] && return 0
    mkdir -p "$(dirname "$secret")"
    (umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(32))' >"$secret.tmp")
    chmod 600 "$secret.tmp"
    mv "$secret.tmp" "$secret"
    orca_log "generated the cluster secret $secret"
    if [ "$explicit_nodes" = 1 ]; then
        orca_log "every master of a cluster needs the SAME secret: copy $secret to the other masters' hosts"
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

do_start() {
    orca_ensure_venv
    PY=$ORCA_VENV/bin/python
    load_nodes
    local secret=${secrets[0]} i pid started=() leader_line="" out state leader leader_url ready term status
    for i in "${!secrets[@]}"; do
        [ "${secrets[$i]}" = "$secret" ] || orca_die "${configs[$i]} names another cluster secret file (${secrets[$i]}, not $secret)"
    done
    mkdir -p data
    ensure_secret "$secret"

    for i in "${!ids[@]}"; do
        if pid=$(running_pid "data/${ids[$i]}.pid"); then
            orca_log "${ids[$i]} already running (pid $pid)"
            continue
        fi
        if health "${urls[$i]}" >/dev/null; then
            orca_die "${ids[$i]}: something already answers on ${urls[$i]} but data/${ids[$i]}.pid names no running master (a cluster started another way? stop it first)"
        fi
        # Appended, not truncated: the log of a master that died before this start stays readable.
        echo "=== $(date -Is) bootstrap: orca server --config ${configs[$i]}" >>"data/${ids[$i]}.log"
        nohup "$ORCA_VENV/bin/orca" server --config "${configs[$i]}" >>"data/${ids[$i]}.log" 2>&1 </dev/null &
        echo $! >"data/${ids[$i]}.pid"
        started+=("$i")
        orca_log "started ${ids[$i]} (pid $!, ${configs[$i]}, log data/${ids[$i]}.log)"
    done

    # Done when the leader is known and every master of this run answers: a master that lost its
    # port to another process would otherwise die unnoticed after a leader was already found.
    local deadline=$((SECONDS + LEADER_WAIT_S)) answering silent
    while :; do
        for i in "${started[@]}"; do
            if ! running_pid "data/${ids[$i]}.pid" >/dev/null; then
                rm -f "data/${ids[$i]}.pid"
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
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log_tails "${ids[@]}"
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
    read -r leader leader_url term <<<"$leader_line"

    if [ ! -s "$TOKEN_FILE" ]; then
        mint_admin_token "$secret"
    else
        # A token left over from an earlier secret (data/cluster.secret deleted on its own) would
        # only produce 401s later: check it once against the leader and replace it if refused.
        local code
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
            -H "Authorization: Bearer $(cat "$TOKEN_FILE")" "$leader_url/api/v1/cluster/info" || true)
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

    local cd_line="" spec_file=web.json spec_hint
    [ "$ORIG_PWD" = "$ROOT" ] || cd_line="  cd $ROOT"$'\n'
    spec_hint="  echo '{\"services\":[{\"name\":\"web\",\"image\":\"orca-test/busybox\",\"command\":[\"httpd\",\"-f\",\"-p\",\"8080\"],\"port\":8080,\"replicas\":2}]}' > web.json"$'\n'
    if [ -f examples/web.json ]; then spec_file=examples/web.json spec_hint=""; fi
    cat <<EOF

orca: ${ids[*]} running; leader ${leader} (${leader_url}), term ${term}
  logs:        $(printf 'data/%s.log ' "${ids[@]}" | sed 's/ $//')
  pid files:   data/<id>.pid
  admin token: ${TOKEN_FILE} (${home_note})

Next:
${cd_line}  export ORCA_TOKEN=\$(cat ${TOKEN_FILE})
  .venv/bin/orca cluster info
${spec_hint}  .venv/bin/orca deploy -f ${spec_file}
  .venv/bin/orca status
Until agents exist, replicas stay pending with reason "no nodes".

Health:  scripts/bootstrap-cluster.sh --status
Stop:    scripts/bootstrap-cluster.sh --stop
EOF
}

case $action in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
esac
