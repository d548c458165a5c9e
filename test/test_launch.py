"""The launch files as a robot user runs them: ``colcon build`` of this package, ``source
install/setup.bash``, then ``ros2 launch mpslam_ros ...`` / launch_testing on the installed share tree.

Needs the upstream launch stack (launch, launch_ros, launch_testing, ros2cli) and colcon, which
./dev.sh installs from ../shared/vendor; skipped with the reason where they are missing. The launch
tests proper are in test/launch/slam_graph_launch.py (run with ``launch_test``); this file builds
the package once per session, renders a short synthetic bag in a temporary folder and checks the
results and the printed measurements.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

LAUNCH_FILES = ["slam.launch.py", "bag_demo.launch.py"]
#: seconds of synthetic household scene in the launch tests' bag (20 Hz stereo)
BAG_SECONDS = 6.0
#: playback rate of the launch tests: half speed leaves VO (>= 10 Hz on 2 idle cores) room on a busy
#: machine, so "no frame lost" tests the launch plumbing, not the machine's load (vo_node drops and
#: counts frames it cannot keep up with, by design: docs/ros.md)
RATE = 0.5
#: a launch test's whole run: warm start-up (~10-20 s on a busy 2-core machine) + the bag + shutdown;
#: a cold numba cache (no `mpslam warmup`) makes the nodes wait minutes before subscribing
LAUNCH_TEST_TIMEOUT_S = 1200


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_file_is_valid_python_using_the_launch_api(name):
    tree = ast.parse((REPO / "launch" / name).read_text(), filename=name)
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {"launch", "launch_ros.actions"} <= imported
    # every executable a launch file starts is a console script of the package
    setup_py = (REPO / "setup.py").read_text()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "executable":
            assert f"{node.value.value} = mpslam_ros." in setup_py, node.value.value
    assert '"launch/*.launch.py"' in setup_py and '"config/*.yaml"' in setup_py


def _tool(name: str) -> str:
    path = shutil.which(name, path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if path is None:
        pytest.skip(f"`{name}` is not installed here (./dev.sh installs the launch stack from ../shared/vendor)")
    return path


@pytest.fixture(scope="session")
def colcon_install(tmp_path_factory) -> dict:
    """``colcon build --symlink-install`` of this package into a temporary workspace; returns the
    environment of ``source install/setup.bash`` there (the installed package shadows nothing else)."""
    colcon = _tool("colcon")
    _tool("launch_test")
    ws = tmp_path_factory.mktemp("colcon_ws")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    build = subprocess.run([colcon, "--log-base", str(ws / "log"), "build", "--paths", str(REPO), "--build-base",
                            str(ws / "build"), "--install-base", str(ws / "install"), "--symlink-install"],
                           cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    sourced = subprocess.run(["bash", "-c", f"source {ws / 'install' / 'setup.bash'} && env -0"], env=env,
                             capture_output=True, timeout=60, check=True).stdout
    out = dict(line.split("=", 1) for line in sourced.decode().split("\0") if "=" in line)
    assert str(ws / "install" / "mpslam_ros") in out["AMENT_PREFIX_PATH"]
    return out


@pytest.fixture(scope="session")
def launch_bag(tmp_path_factory) -> tuple[Path, Path, int]:
    """A short synthetic stereo bag (household scene, seed 3) and its ground truth, in a temporary folder."""
    from mpslam_ros.io.bags import write_bag
    from mpslam_ros.sim.sequences import load_or_generate

    seq = load_or_generate("household", BAG_SECONDS, 3, progress=False)
    folder = tmp_path_factory.mktemp("launch_bag")
    bag = write_bag(seq, folder / "household.mcap")
    gt = folder / "ground_truth.npz"
    np.savez(gt, stamps_ns=seq.stamps_ns, poses=seq.poses)
    return bag, gt, len(seq)


def test_mpslam_is_on_path_after_sourcing_the_install(colcon_install):
    """`mpslam` runs from PATH after `source install/setup.bash` (bin/mpslam, installed by colcon only)."""
    prefix = next(p for p in colcon_install["AMENT_PREFIX_PATH"].split(os.pathsep) if p.endswith("mpslam_ros"))
    found = shutil.which("mpslam", path=colcon_install["PATH"])
    assert found == os.path.join(prefix, "bin", "mpslam"), (found, colcon_install["PATH"])
    shown = subprocess.run(["bash", "-c", "mpslam --help"], env=colcon_install, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: mpslam"), shown.stdout + shown.stderr


def test_ros2_launch_lists_the_arguments(colcon_install):
    """`ros2 launch ... --show-args` from the install: every documented argument is declared."""
    for name, expected in [("bag_demo.launch.py", ["bag", "rate", "use_sim_time", "namespace", "params_file"]),
                           ("slam.launch.py", ["params_file", "use_sim_time", "namespace", "left_image",
                                               "right_image", "left_info", "right_info", "depth_image"])]:
        shown = subprocess.run(["ros2", "launch", "mpslam_ros", name, "--show-args"], env=colcon_install,
                               capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
        declared = re.findall(r"^\s+'(\w+)':", shown.stdout, re.M)
        assert set(expected) <= set(declared), shown.stdout


def _run_launch_test(env: dict, ros_env: dict, tmp_path: Path, case: str, bag, gt, frames: int,
                     namespace: str = "") -> dict:
    env = dict(env, **{k: ros_env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                               "FASTDDS_BUILTIN_TRANSPORTS")},
               PYTHONUNBUFFERED="1", MPSLAM_LAUNCH_TEST_FILE=case, MPSLAM_LAUNCH_TEST_BAG=str(bag),
               MPSLAM_LAUNCH_TEST_FRAMES=str(frames), MPSLAM_LAUNCH_TEST_GT=str(gt),
               MPSLAM_LAUNCH_TEST_NAMESPACE=namespace, MPSLAM_LAUNCH_TEST_RATE=str(RATE))
    run = subprocess.run(["launch_test", str(REPO / "test" / "launch" / "slam_graph_launch.py"),
                          "--junit-xml", str(tmp_path / "launch_test.xml")],
                         env=env, capture_output=True, text=True, timeout=LAUNCH_TEST_TIMEOUT_S)
    output = run.stdout + run.stderr
    (tmp_path / "launch_test.log").write_text(output)
    metrics = dict(re.findall(r"LAUNCH_METRIC (\S+)=(\S+)", output))
    print(f"launch test {case} namespace={namespace!r}: rc {run.returncode}, {metrics}")
    assert run.returncode == 0, output[-6000:]
    assert "Launch stopped before the active tests finished" not in output
    return metrics


def test_bag_demo_launch(colcon_install, launch_bag, ros_env, tmp_path):
    """bag_demo.launch.py bag:=... (use_sim_time true): every frame gets odometry, exits 0."""
    bag, gt, frames = launch_bag
    metrics = _run_launch_test(colcon_install, ros_env, tmp_path, "bag_demo", bag, gt, frames)
    assert float(metrics["first_odometry_after_ready_s"]) <= 10.0
    assert int(metrics["odometry_messages"]) == frames
    assert {k: v for k, v in metrics.items() if k.startswith("exit_code")}
    assert all(v == "0" for k, v in metrics.items() if k.startswith("exit_code"))
    _assert_tf_published(metrics, frames)


def _assert_tf_published(metrics: dict, frames: int) -> None:
    """Where tf2_msgs is installed (./dev.sh builds it), /tf carried odom -> base_link for every frame
    and map -> odom; without it the launch test reports /tf off."""
    if importlib.util.find_spec("tf2_msgs") is None:
        assert metrics.get("tf") == "off", metrics
        return
    assert int(metrics["tf_odom_base_link"]) == frames, metrics
    assert int(metrics["tf_map_odom"]) > 0, metrics


def test_slam_launch_in_a_namespace(colcon_install, launch_bag, ros_env, tmp_path):
    """slam.launch.py namespace:=robot1 use_sim_time:=true with a player in /robot1: parameters from
    config/slam.yaml apply under the namespace, inputs and outputs are namespaced, exits 0."""
    bag, gt, frames = launch_bag
    metrics = _run_launch_test(colcon_install, ros_env, tmp_path, "slam", bag, gt, frames, namespace="robot1")
    assert int(metrics["odometry_messages"]) == frames
    _assert_tf_published(metrics, frames)
    log = (tmp_path / "launch_test.log").read_text()
    assert re.search(r"\[robot1\.vo_node\]: vo_node ready: .* window=10,", log), "YAML window_size under /robot1"
    assert "/robot1/camera/left/image_raw" in log  # the player published the bag under the namespace
