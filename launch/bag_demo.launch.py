"""The SLAM graph driven by a rosbag2, played in (scaled) real time with /clock.

    ros2 launch mpslam_ros bag_demo.launch.py bag:=/path/to/household.mcap [rate:=1.0]
        [use_sim_time:=true] [namespace:=robot1] [params_file:=...]

Make a synthetic bag with ``mpslam synth`` (or let ``mpslam demo`` do it). The nodes subscribe only
once warm (kernels compiled or loaded from the cache) and the player waits, as long as it takes, until
vo_node and loop_closure_node subscribe: a cold first start delays the playback but loses no frame.
A bag is offline data: vo_node queues every frame (config/bag_playback.yaml) and the launch ends once
the bag is over and vo_node reports nothing pending (exit 0 everywhere), or when a node dies (loudly).
With ``namespace:=robot1`` the player publishes the bag's topics under /robot1 too (/clock stays global).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

#: What the player waits for (relative: resolved in the namespace): vo_node's inputs and loop closure's.
WAIT_FOR = ["camera/left/image_raw", "camera/right/image_raw", "camera/left/camera_info",
            "camera/right/camera_info", "vo/keyframes/camera_info"]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("mpslam_ros")
    namespace = LaunchConfiguration("namespace")
    player = Node(
        package="mpslam_ros", executable="bag_player", name="bag_player", namespace=namespace, output="screen",
        arguments=[LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate"), "--in-namespace",
                   "--wait-timeout", "0", "--wait-processed", LaunchConfiguration("drain_timeout"), "--wait-for", *WAIT_FOR],
        on_exit=Shutdown(reason="bag finished"),
    )
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 to play (.mcap file or bag folder)"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback speed factor"),
        DeclareLaunchArgument("use_sim_time", default_value="true",
                              description="nodes take time from the bag's /clock (false: wall time)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the nodes and the bag's topics"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "slam.yaml"),
                              description="YAML with the node parameters"),
        DeclareLaunchArgument("overrides_file", default_value=os.path.join(share, "config", "bag_playback.yaml"),
                              description="YAML over params_file for offline playback (VO queues every frame)"),
        DeclareLaunchArgument("drain_timeout", default_value="300",
                              description="after the bag, seconds to wait for vo_node to process every frame"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(share, "launch", "slam.launch.py")),
            launch_arguments={"params_file": LaunchConfiguration("params_file"),
                              "overrides_file": LaunchConfiguration("overrides_file"),
                              "use_sim_time": LaunchConfiguration("use_sim_time"),
                              "namespace": namespace}.items(),
        ),
        player,
    ])
