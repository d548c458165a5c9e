"""Visual odometry node (shell: filled in by the ROS-nodes work)."""

from __future__ import annotations

from rclpy.node import Node

from mpslam_ros.nodes.runtime import run_node


class VisualOdometryNode(Node):
    def __init__(self) -> None:
        super().__init__("vo_node")
        self.get_logger().info("vo_node started")


def main(args=None) -> int:
    return run_node(VisualOdometryNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
