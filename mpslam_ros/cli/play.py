"""``mpslam play``: play a rosbag2 onto ROS 2 topics (the ``bag_player`` node, in this process)."""

from __future__ import annotations

import argparse

HELP = "play a rosbag2 (mcap or sqlite3) onto ROS 2 topics in real time or at a rate factor, with /clock"


def add_player_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``bag_player`` and ``mpslam play``."""
    parser.add_argument("bag", help="rosbag2 to play: a .mcap file or a bag folder (mcap or sqlite3 inside)")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="playback speed factor: 1 = real time, 2 = twice as fast (default 1)")
    parser.add_argument("--topics", nargs="+", default=None, metavar="TOPIC",
                        help="play only these topics (default: every topic whose type is installed)")
    parser.add_argument("--start", type=float, default=0.0, help="skip the first START seconds of the bag")
    parser.add_argument("--duration", type=float, default=None, help="stop after DURATION seconds of bag time")
    parser.add_argument("--loop", action="store_true", help="start over at the end (time jumps back each loop)")
    parser.add_argument("--clock-hz", type=float, default=100.0,
                        help="rate of /clock messages in bag time; 0 disables /clock (default 100)")
    parser.add_argument("--wait-for", nargs="+", default=[], metavar="TOPIC",
                        help="before playing, wait until each TOPIC has a subscriber (e.g. the camera topics "
                             "of vo_node, so no frame is lost while the nodes start)")
    parser.add_argument("--wait-timeout", type=float, default=60.0,
                        help="seconds to wait for --wait-for subscribers before giving up and playing anyway "
                             "(default 60; 0 = wait as long as it takes: the nodes subscribe only once warm, "
                             "so a cold first start cannot make the player play into the void)")
    parser.add_argument("--wait-processed", type=float, default=0.0, metavar="SECONDS",
                        help="after the last message, wait up to SECONDS until vo_node reports on /diagnostics "
                             "that no frame is pending, then (if it reports) loop_closure_node that no keyframe "
                             "or pose-graph solve is (a bag is offline data: the launch then ends only "
                             "once both have caught up; default 0 = do not wait)")
    parser.add_argument("--in-namespace", action="store_true",
                        help="publish the bag's topics relative to the player's namespace (under "
                             "`--ros-args -r __ns:=/robot1`, /camera/left/image_raw goes out on "
                             "/robot1/camera/left/image_raw); /clock, /tf and /tf_static stay global")
    parser.add_argument("--delay", type=float, default=0.0,
                        help="seconds to sleep before the first message (after --wait-for)")
    parser.add_argument("--qos-depth", type=int, default=100,
                        help="publisher queue depth (default 100): messages a reliable subscriber has not yet "
                             "acknowledged stay this long for resending, so a briefly starved subscriber "
                             "loses nothing")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")


#: ``mpslam play`` takes exactly the player's options.
add_arguments = add_player_arguments


def main(args: argparse.Namespace) -> int:
    from mpslam_ros.nodes.bag_player import play  # rclpy loads only when the command runs

    return play(args, ["mpslam"])
