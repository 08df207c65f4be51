#!/usr/bin/env bash
# The whole test suite; what the README tells you to run and what .ci/run calls.
#
#   scripts/test.sh                   ruff, then every test tier (unit, cluster, docker, browser, chaos)
#   scripts/test.sh tests/unit -k x   extra arguments go to pytest as they are
#
# Creates/refreshes .venv (pip install -e '.[test]' when pyproject.toml changed), makes sure a Docker
# engine and the image orca-test/busybox exist (scripts/ensure-docker.sh: installs docker.io and
# busybox-static from Debian when missing, so that part needs root), runs `ruff check .`, then pytest.
# Without a working Docker the docker tier is skipped (ORCA_SKIP_DOCKER=1) with a warning, except under
# CI=true, where it is an error. Set ORCA_SKIP_DOCKER=1 yourself to skip the Docker set-up entirely.
# Exit status: ruff's if it fails, else pytest's.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ORCA_LOG_NAME="test"
orca_cd_root
orca_ensure_venv

if [ "${ORCA_SKIP_DOCKER:-}" = 1 ]; then
    orca_log "ORCA_SKIP_DOCKER=1: not setting up Docker; the docker tier is skipped"
elif [ -x scripts/ensure-docker.sh ]; then
    if ! scripts/ensure-docker.sh; then
        if [ "${CI:-}" = true ]; then
            orca_die "scripts/ensure-docker.sh failed (CI=true: Docker is required)"
        fi
        orca_log "WARNING: no working Docker (scripts/ensure-docker.sh failed; it needs root to install)."
        orca_log "WARNING: the docker tier is skipped (ORCA_SKIP_DOCKER=1)."
        export ORCA_SKIP_DOCKER=1
    fi
fi

orca_log "ruff check ."
"$ORCA_VENV/bin/ruff" check . || orca_die "ruff check . failed"

orca_log "pytest $*"
rc=0
"$ORCA_VENV/bin/python" -m pytest -q -x -p no:cacheprovider "$@" || rc=$?
exit "$rc"
