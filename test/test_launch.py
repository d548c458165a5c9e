"""Launch files: valid Python against the launch/launch_ros API, installed by setup.py, building a
LaunchDescription where `launch` is installed (it is not installable from the registries here)."""

from __future__ import annotations

import ast
import importlib.util

import pytest

from conftest import REPO

LAUNCH_FILES = ["slam.launch.py", "bag_demo.launch.py"]


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


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_file_builds_a_launch_description(name, monkeypatch):
    if importlib.util.find_spec("launch") is None or importlib.util.find_spec("launch_ros") is None:
        pytest.skip("`launch`/`launch_ros` are not installed here (they come with a ROS 2 install, not PyPI)")
    from launch import LaunchDescription

    import ament_index_python.packages as aip

    monkeypatch.setattr(aip, "get_package_share_directory", lambda pkg: str(REPO))
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), REPO / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.get_package_share_directory = lambda pkg: str(REPO)
    assert isinstance(module.generate_launch_description(), LaunchDescription)
