"""The SLAM graph driven by a rosbag2, played in (scaled) real time with /clock.

    ros2 launch mpslam_ros bag_demo.launch.py bag:=/path/to/household.mcap [rate:=1.0]

Make a synthetic bag with ``mpslam synth`` (or let ``mpslam demo`` do it). The player waits until
vo_node subscribes to the cameras, so no frame is lost while the nodes start.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, IncludeLaunchDescription, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("mpslam_ros")
    player = Node(
        package="mpslam_ros", executable="bag_player", name="bag_player", output="screen",
        arguments=[LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate"),
                   "--wait-for", "/camera/left/image_raw", "/camera/right/image_raw",
                   "/camera/left/camera_info", "/camera/right/camera_info", "/vo/keyframes/camera_info"],
    )
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 to play (.mcap file or bag folder)"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback speed factor"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "slam.yaml"),
                              description="YAML with the node parameters"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(share, "launch", "slam.launch.py")),
            launch_arguments={"params_file": LaunchConfiguration("params_file"), "use_sim_time": "true"}.items(),
        ),
        player,
        RegisterEventHandler(OnProcessExit(target_action=player,
                                           on_exit=[EmitEvent(event=Shutdown(reason="bag finished"))])),
    ])
