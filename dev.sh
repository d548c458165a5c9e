#!/usr/bin/env bash
# One-stop entry for a fresh machine (Debian + Python 3.11): sets up ./.venv idempotently, then runs
#   ./dev.sh demo   -> the full SLAM demo on the built-in synthetic data (`mpslam demo`)
#   ./dev.sh test   -> the whole test suite (pytest)
#   ./dev.sh setup  -> only the environment;  ./dev.sh shell CMD... -> run CMD inside it
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=.venv
STAMP=$VENV/.installed-$(cat setup.py | sha1sum | cut -c1-12)

setup_env() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[dev.sh] creating $VENV with $("$PY" --version)"
    "$PY" -m venv "$VENV"
  fi
  if [ ! -f "$STAMP" ]; then
    echo "[dev.sh] installing mpslam_ros[ros,test,bench] into $VENV (first run only)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[ros,test,bench]"
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
  fi
  export PATH="$PWD/$VENV/bin:$PATH"
  # Keep each run's DDS traffic on this machine.
  export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
  # Compile (or load from cache) every numba kernel once, so tests and nodes start warm.
  mpslam warmup >/dev/null
}

cmd=${1:-demo}
shift || true
case "$cmd" in
  setup) setup_env ;;
  demo) setup_env; exec mpslam demo "$@" ;;
  test) setup_env; exec python -m pytest test -p no:cacheprovider "$@" ;;
  shell) setup_env; exec "$@" ;;
  *) echo "usage: ./dev.sh [demo|test|setup|shell CMD...]" >&2; exit 2 ;;
esac
