#!/usr/bin/env bash
# The failover drill: SIGKILL the leader N times under write load, then prove nothing was lost or doubled.
#
#   scripts/failover-test.sh                        20 rounds on a temporary three-master cluster
#   scripts/failover-test.sh --rounds 5             fewer rounds
#   scripts/failover-test.sh --cluster-dir cluster  drill the masters of cluster/*.toml instead
#   scripts/failover-test.sh --replace --rounds 5   each round: kill the leader, wipe its disk, replace it
#                                                   (remove-master, new master at a new address, add-master)
#   scripts/failover-test.sh --restore              then a disaster-recovery round: save under load, wipe every
#                                                   master's data directory, restore, check acknowledged writes
#
# A thin wrapper: it creates .venv when missing (scripts/lib.sh) and runs scripts/failover_drill.py with
# the same arguments (--help lists them all; its docstring says how --cluster-dir finds, restarts and
# leaves the masters). One line per round, then one JSON line:
#   {"rounds": N, "acked": A, "lost": L, "duplicated": D, "failover_s": {"median": x, "max": y},
#    "spurious_elections": s, ...}
# Exit status: 0 when nothing was lost or duplicated and every round failed over within 10 s; 1 otherwise;
# 2 on bad arguments.
set -euo pipefail

ORIG_PWD=$(pwd)
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck disable=SC2034 # read by orca_log in lib.sh
ORCA_LOG_NAME=failover-test
orca_cd_root
orca_ensure_venv

# The drill runs from the repository root (like the masters): a relative --cluster-dir is the caller's.
args=()
while [ $# -gt 0 ]; do
    case $1 in
        --cluster-dir)
            [ $# -ge 2 ] || { echo "failover-test: --cluster-dir needs a directory" >&2; exit 2; }
            d=$2; [[ $d == /* ]] || d="$ORIG_PWD/$d"
            args+=(--cluster-dir "$d"); shift ;;
        --cluster-dir=*)
            d=${1#--cluster-dir=}; [[ $d == /* ]] || d="$ORIG_PWD/$d"
            args+=(--cluster-dir "$d") ;;
        *) args+=("$1") ;;
    esac
    shift
done

exec "$ORCA_VENV/bin/python" scripts/failover_drill.py "${args[@]}"
