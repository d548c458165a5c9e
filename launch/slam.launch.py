"""Both SLAM nodes with the packaged parameters.

    ros2 launch mpslam_ros slam.launch.py [params_file:=...] [overrides_file:=...] [use_sim_time:=true]
        [namespace:=robot1]
        [left_image:=/stereo/left/image_rect] [right_image:=...] [left_info:=...] [right_info:=...]
        [depth_image:=...]

Topic names are relative: under ``namespace:=robot1`` the nodes read /robot1/camera/... and write
/robot1/vo/..., /robot1/loop_closure/... (give an absolute name, e.g. left_image:=/stereo/left, to
read a global topic). The parameters in config/slam.yaml are keyed ``/**/vo_node`` etc., so they
apply in any namespace. loop_closure_node only listens to vo_node (vo/keyframes/*), so it needs no
remapping. If either node exits (a crash, or its own error exit), the whole launch shuts down: a
half-running SLAM graph must not look alive.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def slam_nodes(context) -> list:
    """The two nodes; overrides_file (when given) is loaded after params_file, so its values win."""
    params = [LaunchConfiguration("params_file")]
    if LaunchConfiguration("overrides_file").perform(context):
        params.append(LaunchConfiguration("overrides_file"))
    use_sim_time = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)
    namespace = LaunchConfiguration("namespace")
    camera_remaps = [
        ("camera/left/image_raw", LaunchConfiguration("left_image")),
        ("camera/right/image_raw", LaunchConfiguration("right_image")),
        ("camera/left/camera_info", LaunchConfiguration("left_info")),
        ("camera/right/camera_info", LaunchConfiguration("right_info")),
        ("camera/depth/image_raw", LaunchConfiguration("depth_image")),
    ]
    return [
        Node(package="mpslam_ros", executable="vo_node", name="vo_node", namespace=namespace, output="screen",
             parameters=[*params, {"use_sim_time": use_sim_time}], remappings=camera_remaps,
             on_exit=Shutdown(reason="vo_node exited")),
        Node(package="mpslam_ros", executable="loop_closure_node", name="loop_closure_node", namespace=namespace,
             output="screen", parameters=[*params, {"use_sim_time": use_sim_time}],
             on_exit=Shutdown(reason="loop_closure_node exited")),
    ]


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("mpslam_ros"), "config", "slam.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML with the vo_node and loop_closure_node parameters"),
        DeclareLaunchArgument("overrides_file", default_value="",
                              description="optional second YAML loaded after params_file (its values win)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="take time from /clock (true when playing a bag)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of both nodes"),
        DeclareLaunchArgument("left_image", default_value="camera/left/image_raw",
                              description="left image topic (relative names resolve in the namespace)"),
        DeclareLaunchArgument("right_image", default_value="camera/right/image_raw",
                              description="right image topic"),
        DeclareLaunchArgument("left_info", default_value="camera/left/camera_info",
                              description="left CameraInfo topic"),
        DeclareLaunchArgument("right_info", default_value="camera/right/camera_info",
                              description="right CameraInfo topic"),
        DeclareLaunchArgument("depth_image", default_value="camera/depth/image_raw",
                              description="depth image topic (vo_node mode 'rgbd')"),
        OpaqueFunction(function=slam_nodes),
    ])
