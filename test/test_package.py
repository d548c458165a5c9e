"""Package foundation: the ROS-free core imports without rclpy, the CLI answers, a node starts
as a real process, logs, and exits cleanly on SIGINT and SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import REPO


def test_core_imports_without_rclpy():
    # Block rclpy at import time: the core must not need it.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'rclpy' or name.startswith('rclpy.'):\n"
        "            raise ImportError('rclpy blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import mpslam_ros, mpslam_ros.datatypes, mpslam_ros.cli\n"
        "mpslam_ros.cli.build_parser()\n"
        "assert 'rclpy' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "mpslam_ros", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: mpslam" in out.stdout
    assert "bench" in out.stdout


def test_package_xml_declares_ros_dependencies():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    deps = {e.text for e in root if e.tag.endswith("depend")}
    for key in ("rclpy", "sensor_msgs", "geometry_msgs", "nav_msgs", "std_msgs", "visualization_msgs",
                "diagnostic_msgs", "python3-numpy", "python3-scipy", "launch_testing", "python3-pytest"):
        assert key in deps, key
    assert root.find("export/build_type").text == "ament_python"


def _start_node(entry: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([entry], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if sel.select(timeout=0.5):
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if needle in line:
                return "".join(seen)
    proc.kill()
    raise AssertionError(f"{needle!r} not seen; output:\n{''.join(seen)}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_node_starts_logs_and_exits_cleanly(ros_env, sig):
    pytest.importorskip("rclpy")
    import shutil

    entry = shutil.which("vo_node") or str(REPO / ".venv" / "bin" / "vo_node")
    proc = _start_node(entry, ros_env)
    _wait_for(proc, "vo_node started", timeout=60)
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "shutting down" in rest
    assert "Traceback" not in rest
