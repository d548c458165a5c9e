"""Node parameters: every one is declared with a description, config/slam.yaml sets only declared
parameters (no stale or misspelt keys), every node-level parameter has its default in the YAML, and
values from --params-file / -p reach the node."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

pytest.importorskip("rclpy")

CONFIG = REPO / "config" / "slam.yaml"

DUMP = r"""
import importlib, json, sys
import rclpy
rclpy.init(args=sys.argv)
module, cls = sys.argv[1], sys.argv[2]
node = getattr(importlib.import_module(module), cls)()
out = {}
for name, param in node._parameters.items():
    desc = node.describe_parameter(name)
    out[name] = {"value": param.value, "description": desc.description}
close = getattr(node, "close", None)
if close:
    close()
node.destroy_node()
rclpy.shutdown()
print("PARAMS" + json.dumps(out))
"""


def dump_params(ros_env, module: str, cls: str, *ros_args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", DUMP, module, cls, "--ros-args", "--params-file", str(CONFIG),
                          *ros_args], env=ros_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("PARAMS"))
    return json.loads(line[len("PARAMS"):])


def flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def yaml_params(node_name: str) -> dict:
    cfg = yaml.safe_load(CONFIG.read_text())
    values = flatten(cfg["/**"]["ros__parameters"])
    values.update(flatten(cfg[f"/**/{node_name}"]["ros__parameters"]))  # any namespace (namespace:=robot1)
    return values


@pytest.mark.parametrize("node_name,module,cls,prefix", [
    ("vo_node", "mpslam_ros.nodes.vo_node", "VisualOdometryNode", "vo."),
    ("loop_closure_node", "mpslam_ros.nodes.loop_closure_node", "LoopClosureNode", "loop."),
])
def test_yaml_matches_declared_parameters(ros_env, node_name, module, cls, prefix):
    if node_name == "loop_closure_node":
        pytest.importorskip("mpslam_ros.slam.loop_closure")
    declared = dump_params(ros_env, module, cls, "-p", "warmup:=false", "-p", f"{node_name}:window_size:=7")
    from_yaml = yaml_params(node_name)
    undeclared = set(from_yaml) - set(declared)
    assert not undeclared, f"config/slam.yaml sets parameters {node_name} does not declare: {undeclared}"
    node_level = {n for n in declared if not n.startswith(prefix) and n not in ("use_sim_time", "warmup",
                                                                               "window_size", "start_type_description_service")}
    missing = node_level - set(from_yaml)
    assert not missing, f"parameters of {node_name} without a default in config/slam.yaml: {missing}"
    for name, info in declared.items():
        if name in ("use_sim_time", "start_type_description_service"):
            continue  # declared by rclpy itself
        assert info["description"].strip(), f"{node_name}.{name} has no description"
    for name, value in from_yaml.items():
        if name not in ("warmup", "window_size"):
            assert declared[name]["value"] == value, name
    if node_name == "vo_node":
        assert declared["window_size"]["value"] == 7  # -p overrides the file


@pytest.mark.skipif(__import__("os").path.exists("/dev/nvidiactl"), reason="this machine has a GPU")
@pytest.mark.parametrize("node_name,module,cls", [
    ("vo_node", "mpslam_ros.nodes.vo_node", "VisualOdometryNode"),
    ("loop_closure_node", "mpslam_ros.nodes.loop_closure_node", "LoopClosureNode"),
])
def test_device_cuda_without_a_gpu_is_logged_and_the_node_runs_on_the_cpu(ros_env, node_name, module, cls):
    if "loop_closure" in module:
        pytest.importorskip("mpslam_ros.slam.loop_closure")
    out = subprocess.run([sys.executable, "-c", DUMP, module, cls, "--ros-args", "--params-file", str(CONFIG),
                          "-p", "warmup:=false", "-p", f"{node_name}:device:=cuda"], env=ros_env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    log = out.stdout + out.stderr
    assert "parameter device='cuda'" in log and "using 'cpu'" in log, log
