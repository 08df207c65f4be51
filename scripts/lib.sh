# shellcheck shell=bash
# Functions shared by scripts/bootstrap-cluster.sh, scripts/test.sh and .ci/run. Sourced, never run.
# Every function expects the current directory to be the repository root (`orca_cd_root` gets there).

# The stamp records that `pip install -e '.[test]'` finished; pyproject.toml newer than it means the
# dependencies may have changed, so the install runs again.
ORCA_VENV=.venv
ORCA_STAMP=$ORCA_VENV/.orca-installed

orca_log() { echo "${ORCA_LOG_NAME:-orca}: $*" >&2; }
orca_die() { orca_log "ERROR: $*"; exit 1; }

orca_cd_root() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.." || orca_die "cannot cd to the repository root"
    [ -f pyproject.toml ] || orca_die "$(pwd) has no pyproject.toml: not the orca repository"
}

# True if $1 runs a Python >= 3.11 that can create a venv with pip in it (Debian splits `venv` and
# `ensurepip` into python3-venv; pyenv builds have both).
orca_python_ok() {
    "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

# Print the path of the first suitable Python: $PYTHON if set, then the usual names on PATH, then pyenv's
# builds (which a non-interactive shell may not have on its PATH).
orca_find_python() {
    local c path
    for c in "${PYTHON:-}" python3.11 python3.12 python3.13 python3 \
             "$HOME"/.pyenv/versions/3.1[1-9]*/bin/python3 /root/.pyenv/versions/3.1[1-9]*/bin/python3; do
        [ -n "$c" ] || continue
        path=$(command -v "$c" 2>/dev/null) || continue
        if orca_python_ok "$path"; then
            echo "$path"
            return 0
        fi
    done
    return 1
}

# Create .venv and install the package with its test extras, unless that is already done and
# pyproject.toml has not changed since. A .venv whose Python no longer runs (or is older than 3.11) is
# rebuilt: it is git-ignored and holds nothing but what this function put there.
orca_ensure_venv() {
    if [ -x "$ORCA_VENV/bin/orca" ] && [ -f "$ORCA_STAMP" ] && ! [ pyproject.toml -nt "$ORCA_STAMP" ]; then
        return 0
    fi
    if [ -e "$ORCA_VENV" ] && ! "$ORCA_VENV/bin/python" -c \
            'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
        orca_log "$ORCA_VENV is broken or older than Python 3.11: recreating it"
        rm -rf "$ORCA_VENV"
    fi
    if [ ! -x "$ORCA_VENV/bin/python" ]; then
        local py
        py=$(orca_find_python) || orca_die "no Python >= 3.11 with venv/ensurepip found (Debian: apt-get install python3-venv; or set PYTHON=/path/to/python3.11)"
        orca_log "creating $ORCA_VENV with $py ($("$py" --version 2>&1))"
        "$py" -m venv "$ORCA_VENV" || orca_die "$py -m venv $ORCA_VENV failed"
    fi
    orca_log "installing orca and its test extras into $ORCA_VENV (pip install -e '.[test]')"
    "$ORCA_VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]' \
        || orca_die "pip install -e '.[test]' failed"
    [ -x "$ORCA_VENV/bin/orca" ] || orca_die "$ORCA_VENV/bin/orca missing after pip install"
    touch "$ORCA_STAMP"
}

# apt-get install the Debian packages "$@" (root only; the caller checks). The package lists are usually
# fresh enough: `apt-get update` runs only when the plain install fails.
orca_apt_install() {
    command -v apt-get >/dev/null || { orca_log "no apt-get: install $* by hand"; return 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 && return 0
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2
}
