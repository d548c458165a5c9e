#!/usr/bin/env bash
# One-stop entry for a fresh machine (Debian + Python 3.11): sets up ./.venv idempotently, then runs
#   ./dev.sh demo   -> the full SLAM demo on the built-in synthetic data (`mpslam demo`)
#   ./dev.sh test   -> the whole test suite (pytest)
#   ./dev.sh setup  -> only the environment;  ./dev.sh shell CMD... -> run CMD inside it
# Where ../shared/vendor holds the upstream ROS 2 launch stack (launch, launch_ros, launch_testing,
# ros2cli: on no registry), it is installed into .venv too: `ros2 launch`, `colcon build` and the launch
# tests then run. Two interface packages no registry serves are built from their .msg/.srv files with
# the rosidl generators of the ROS wheels and gcc (dev/build_interfaces.py, dev/test-only):
# composition_interfaces (launch_ros imports it) and tf2_msgs (/tf, /tf_static; optional for the package).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=.venv
VENDOR=${MPSLAM_ROS_VENDOR:-../shared/vendor}
STAMP=$VENV/.installed-$(cat setup.py dev.sh dev/build_interfaces.py $(find dev/interfaces -type f | sort) \
  $(ls "$VENDOR"/SOURCES.txt 2>/dev/null) | sha1sum | cut -c1-12)

# The vendored upstream packages, in dependency order (pip --no-deps: their Python deps are the `launch` extra).
VENDORED_PACKAGES="launch/launch launch/launch_xml launch/launch_yaml launch/launch_testing launch/launch_pytest
  ros2cli/ros2cli ros2cli/ros2pkg ros2cli/ros2run ros2cli/ros2node ros2cli/ros2topic ros2cli/ros2param
  launch_ros/launch_ros launch_ros/launch_testing_ros launch_ros/ros2launch"

install_vendored_launch() {
  local src=$VENV/vendor-src
  rm -rf "$src" && mkdir -p "$src"
  for t in "$VENDOR"/*.tar.gz; do tar xzf "$t" -C "$src"; done
  local paths=()
  for p in $VENDORED_PACKAGES; do paths+=("$src/$p"); done
  "$VENV/bin/python" -m pip uninstall -q -y mpslam-dev-composition-interfaces-shim 2>/dev/null || true
  "$VENV/bin/python" -m pip install -q --no-deps "${paths[@]}"
}

# tf2_msgs and composition_interfaces into .venv (lib/, site-packages/, share/), from dev/interfaces.
build_interfaces() {
  if ! command -v gcc >/dev/null || ! command -v g++ >/dev/null; then
    echo "[dev.sh] no gcc/g++: tf2_msgs and composition_interfaces not built (/tf off, launch tests skip)" >&2
    return 0
  fi
  for p in composition_interfaces tf2_msgs; do
    "$VENV/bin/python" dev/build_interfaces.py "dev/interfaces/$p" --prefix "$VENV"
  done
}

setup_env() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[dev.sh] creating $VENV with $("$PY" --version)"
    "$PY" -m venv "$VENV"
  fi
  if [ ! -f "$STAMP" ]; then
    echo "[dev.sh] installing mpslam_ros and its dependencies into $VENV (first run only)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    if [ -d "$VENDOR" ]; then
      "$VENV/bin/python" -m pip install -q -e ".[ros,test,bench,launch]"
      echo "[dev.sh] installing the ROS 2 launch stack from $VENDOR into $VENV"
      install_vendored_launch
      build_interfaces
    else
      echo "[dev.sh] no $VENDOR: without the launch stack (launch tests skip)"
      "$VENV/bin/python" -m pip install -q -e ".[ros,test,bench]"
      build_interfaces
    fi
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
  fi
  export PATH="$PWD/$VENV/bin:$PATH"
  # Keep each run's DDS traffic on this machine.
  export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
  # ament_index (ros2 launch/run/pkg) finds the vendored packages installed into the venv prefix.
  export AMENT_PREFIX_PATH=$PWD/$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
  # Compile (or load from cache) every numba kernel once, so tests and nodes start warm. Said out loud
  # when it runs: from empty caches it takes minutes, and a silent terminal looks like a hang.
  if ! mpslam warmup --check >/dev/null; then
    echo "[dev.sh] compiling every numba kernel once (first run only: 15-20 minutes on 2 cores, more on a"
    echo "[dev.sh] heavily loaded machine; one line per stage below; cached afterwards)"
    mpslam warmup
  fi
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
