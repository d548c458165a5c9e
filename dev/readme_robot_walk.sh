#!/usr/bin/env bash
# The README's robot lines, then `ros2 launch mpslam_ros bag_demo.launch.py` N times (N=10 default) and
# `slam.launch.py namespace:=robot1` once (stopped with Ctrl-C after 15 s): prints, per run, the exit
# code, where each node took the camera extrinsic from, and vo_node's frame summary.
#   dev/readme_robot_walk.sh [OUT_DIR]      (N=20 dev/readme_robot_walk.sh to repeat more)
set -eo pipefail  # no -u: colcon's setup.bash reads unset variables
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-/tmp/mpslam_readme_walk}
rm -rf "$OUT" && mkdir -p "$OUT/ws"
cd "$REPO" && ./dev.sh setup && source .venv/bin/activate
cd "$OUT/ws"
colcon build --symlink-install --paths "$REPO" > "$OUT/colcon.log" 2>&1 && source install/setup.bash
echo "mpslam: $(command -v mpslam)"
mpslam synth --duration 10 -o "$OUT/household.mcap" > "$OUT/synth.log" 2>&1
summary() {  # LOG RC SECONDS
  local src codes
  src=$(grep -o 'camera extrinsic base_link -> camera_left from [^:(]*' "$1" | sed 's/.*from //; s/ *$//' | paste -sd'|')
  codes=$(grep -c 'process has finished cleanly' "$1" || true)
  echo "rc=$2 ${3}s extrinsic=[$src] clean_exits=$codes $(grep -o 'received [0-9]* frames, processed [0-9]*, dropped [0-9]*' "$1" || true)"
}
for i in $(seq 1 "${N:-10}"); do
  t0=$(date +%s); rc=0
  timeout 300 ros2 launch mpslam_ros bag_demo.launch.py bag:="$OUT/household.mcap" > "$OUT/bag_demo$i.log" 2>&1 || rc=$?
  echo "bag_demo run $i: $(summary "$OUT/bag_demo$i.log" $rc $(( $(date +%s) - t0 )))"
done
t0=$(date +%s); rc=0
set -m  # its own process group, SIGINT not ignored (a script's background job ignores it otherwise)
ros2 launch mpslam_ros slam.launch.py namespace:=robot1 > "$OUT/slam.log" 2>&1 & pid=$!
set +m
sleep 15; kill -INT -- -$pid; wait $pid || rc=$?
echo "slam.launch.py namespace:=robot1 (Ctrl-C after 15 s): rc=$rc clean_exits=$(grep -c 'process has finished cleanly' "$OUT/slam.log" || true) ready=$(grep -c ' ready' "$OUT/slam.log" || true)"
