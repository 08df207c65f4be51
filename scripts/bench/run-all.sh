#!/usr/bin/env bash
# Run every scripts/bench/*.py benchmark, one at a time, collect their JSON lines and write
# docs/benchmarks.md with scripts/bench/report.py.
#
#   scripts/bench/run-all.sh [--quick] [--keep-jsonl FILE] [--only NAME[,NAME...]] [--out FILE]
#   scripts/bench/run-all.sh --report-only FILE.jsonl [--out FILE]
#
# --quick       shortened durations/rounds: a smoke run, not figures to publish.
# --keep-jsonl  also copy the collected JSON lines to FILE (they go to a temp file otherwise).
# --only        run only these benchmarks (names as below), e.g. --only scheduler,proxy.
# --report-only regenerate the report from an earlier run's JSON lines.
#
# Each benchmark has a wall-clock bound (timeout -> SIGTERM, which every bench turns into its
# cleanup path; SIGKILL 30 s later). A benchmark that fails or times out is recorded as
# {"bench": NAME, "error": ...} and the run goes on. Needs Docker (image orca-test/busybox) for
# deploy, node_loss and proxy; etcd (Debian: etcd-server etcd-client) for the etcd baseline.
set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"

QUICK=0
KEEP=""
ONLY=""
OUT="$ROOT/docs/benchmarks.md"
REPORT_ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --keep-jsonl) KEEP="$2"; shift ;;
        --only) ONLY="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --report-only) REPORT_ONLY="$2"; shift ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run-all.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

if [ -n "$REPORT_ONLY" ]; then
    meta="${REPORT_ONLY%.jsonl}.meta.json"  # written next to --keep-jsonl FILE by a full run
    if [ -f "$meta" ]; then
        exec "$PY" "$HERE/report.py" --jsonl "$REPORT_ONLY" --meta "$meta" --out "$OUT"
    fi
    exec "$PY" "$HERE/report.py" --jsonl "$REPORT_ONLY" --out "$OUT"
fi

# name | arguments (full run) | arguments (--quick) | timeout seconds
BENCHES=(
    "raft_writes|--sweep|--seconds 3 --sweep-seconds 1.5 --rounds 1|900"
    "failover|--rounds 10|--rounds 2 --follower-restarts 1|900"
    "scheduler||--repeat 1|600"
    "scheduler_e2e||--nodes 200 --services 20 --steady 2|900"
    "deploy||--rounds 1|600"
    "node_loss||--rounds 1|600"
    "proxy||--seconds 4 --paced-seconds 2 --rounds 1|300"
    "ingress||--seconds 4 --paced-seconds 2 --rounds 1 --changes 6|600"
    "drain||--rounds 1 --also-max-parallel 0|900"
    "heartbeat_delay||--seconds 10|300"
    "etcd_baseline||--seconds 3 --rounds 2|300"
    "tls_api||--seconds 3 --rounds 1|600"
    "durability||--seconds 3 --repeat 1 --strace-seconds 2|600"
    "restore||--services 1000|900"
    "add_master|--services 10000|--services 200 --rounds 1|900"
    "blocking|--rounds 50|--rounds 10|300"
    "mesh||--seconds 12 --rounds 6|400"
    "scale||--nodes 200 --services 2000 --steady 2 --page-seconds 5|1200"
)

# Any other benchmark in scripts/bench/ runs too, with its own defaults (helpers are not benchmarks).
for script in "$HERE"/*.py; do
    n="$(basename "$script" .py)"
    case "$n" in _*|raw_pysyncobj_node|report) continue ;; esac
    listed=0
    for e in "${BENCHES[@]}"; do [ "${e%%|*}" = "$n" ] && listed=1; done
    [ "$listed" = 0 ] && BENCHES+=("$n|||600")
done

# The etcd baseline (raft_writes.py runs it in the same run, etcd_baseline.py on its own) needs Debian's
# etcd 3.4 at /usr/bin/etcd: installed here when missing and we are root (ORCA_BENCH_NO_INSTALL=1: don't).
if ! command -v etcd >/dev/null && [ "$(id -u)" -eq 0 ] && [ -z "${ORCA_BENCH_NO_INSTALL:-}" ] \
        && command -v apt-get >/dev/null; then
    echo "run-all.sh: installing etcd-server (the etcd baseline)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >&2; } \
        || echo "run-all.sh: could not install etcd-server; the etcd baseline is skipped" >&2
fi

TMP="$(mktemp -d /tmp/orca-bench-run.XXXXXX)"
JSONL="$TMP/benchmarks.jsonl"
META="$TMP/meta.json"
CHILD=""
cleanup() {
    if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
        kill -TERM "$CHILD" 2>/dev/null
        sleep 5
        kill -KILL "$CHILD" 2>/dev/null
    fi
    if [ -n "$KEEP" ] && [ -f "$JSONL" ]; then cp "$JSONL" "$KEEP"; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

: >"$JSONL"
load_start="$(cut -d' ' -f1 /proc/loadavg)"
started_at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "run-all: $(nproc) CPUs, load $load_start, JSON lines in $JSONL" >&2

for entry in "${BENCHES[@]}"; do
    IFS='|' read -r name full quick limit <<<"$entry"
    if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then continue; fi
    script="$HERE/$name.py"
    if [ ! -f "$script" ]; then
        echo "{\"bench\": \"$name\", \"error\": \"$name.py not present\"}" >>"$JSONL"
        continue
    fi
    if [ "$QUICK" = 1 ]; then args="$quick"; else args="$full"; fi
    cmd="$PY scripts/bench/$name.py${args:+ $args}"
    echo "run-all: [$(date -u +%H:%M:%S)] $cmd (bound ${limit}s)" >&2
    # The code under test: other people may commit (or edit orca/) while this runs; say what each bench ran.
    head="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    dirty="$(git -C "$ROOT" --no-optional-locks status --porcelain -- orca 2>/dev/null | awk '{print $2}' | paste -sd, -)"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    (cd "$ROOT" && exec timeout -k 30 "$limit" "$PY" "scripts/bench/$name.py" $args) \
        >"$TMP/$name.out" 2>"$TMP/$name.err" &
    CHILD=$!
    wait "$CHILD"; rc=$?
    CHILD=""
    t1=$(date +%s.%N)
    line="$(grep '^{' "$TMP/$name.out" | tail -n 1)"
    "$PY" - "$name" "$rc" "$t0" "$t1" "$cmd" "$TMP/$name.err" "$line" "$head" "$dirty" >>"$JSONL" <<'EOF'
import json, sys
name, rc, t0, t1, cmd, err, line, head, dirty = sys.argv[1:10]
try:
    obj = json.loads(line) if line else None
except ValueError:
    obj = None
if not isinstance(obj, dict):
    tail = open(err, errors="replace").read().strip().splitlines()[-5:]
    obj = {"bench": name, "error": f"exit {rc}" + (" (timed out)" if rc in ("124", "137") else ""),
           "stderr_tail": tail}
obj.setdefault("bench", name)
obj["_run"] = {"command": cmd, "exit": int(rc), "wall_s": round(float(t1) - float(t0), 1), "commit": head,
               "uncommitted_orca_files": [f for f in dirty.split(",") if f]}
print(json.dumps(obj))
EOF
    echo "run-all: [$(date -u +%H:%M:%S)] $name exit $rc in $(awk "BEGIN{printf \"%.0f\", $t1 - $t0}") s" >&2
    [ -n "$KEEP" ] && cp "$JSONL" "$KEEP"
done

load_end="$(cut -d' ' -f1 /proc/loadavg)"
"$PY" "$HERE/report.py" --collect-meta "$META" --load-start "$load_start" --load-end "$load_end" \
    --started-at "$started_at" --invocation "scripts/bench/run-all.sh$([ "$QUICK" = 1 ] && echo ' --quick')" \
    --quick "$QUICK"
"$PY" "$HERE/report.py" --jsonl "$JSONL" --meta "$META" --out "$OUT"
rc=$?
[ -n "$KEEP" ] && cp "$META" "${KEEP%.jsonl}.meta.json"
exit $rc
