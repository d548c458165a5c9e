"""mpslam_ros: visual SLAM whose heavy numerics run in mixed precision.

The package is ROS-free except for :mod:`mpslam_ros.nodes`; everything else can be imported and
scripted without rclpy.
"""

__version__ = "0.1.0"
