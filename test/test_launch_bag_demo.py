"""launch_testing: bag_demo.launch.py on a short synthetic bag; the output topics arrive and the ATE
of the odometry is within bounds. Runs where a ROS 2 install provides launch_testing (``colcon
test`` or ``launch_test test/test_launch_bag_demo.py``); skipped with the reason elsewhere."""

from __future__ import annotations

import os
import tempfile
import unittest
from pathlib import Path

import pytest

launch_testing = pytest.importorskip(
    "launch_testing", reason="launch_testing is not installed here (it comes with a ROS 2 install, not PyPI)")
pytest.importorskip("launch_ros", reason="launch_ros is not installed here (it comes with a ROS 2 install)")

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DURATION_S = 10.0
ATE_BOUND_M = 0.10


def _synthetic_bag() -> tuple[Path, object]:
    from mpslam_ros.io.bags import write_bag
    from mpslam_ros.sim.sequences import load_or_generate

    seq = load_or_generate("household", DURATION_S, 3)
    bag = Path(tempfile.mkdtemp()) / "household.mcap"
    write_bag(seq, bag)
    return bag, seq


BAG, SEQUENCE = _synthetic_bag()


@pytest.mark.launch_test
def generate_test_description():
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory("mpslam_ros"))
    demo = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(share / "launch" / "bag_demo.launch.py")),
        launch_arguments={"bag": str(BAG), "rate": "1.0"}.items())
    return launch.LaunchDescription([demo, launch_testing.actions.ReadyToTest()])


class TestBagDemoOutputs(unittest.TestCase):
    def test_outputs_and_ate(self):
        from mpslam_ros.evaluation.metrics import ate
        from mpslam_ros.nodes.recorder import OutputRecorder

        with OutputRecorder(domain_id=int(os.environ.get("ROS_DOMAIN_ID", "0"))) as rec:
            rec.wait_for(lambda r: r.count("vo/odometry") >= 0.9 * len(SEQUENCE)
                         and r.count("loop_closure/path") > 0, timeout=DURATION_S + 120)
            for topic in ("vo/odometry", "vo/path", "vo/landmarks", "vo/keyframes/features", "loop_closure/path",
                          "loop_closure/map_to_odom", "/diagnostics"):
                self.assertGreater(rec.count(topic), 0, topic)
            self.assertLess(ate(SEQUENCE.ground_truth(), rec.odometry_trajectory()).rmse, ATE_BOUND_M)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
