"""Thin rclpy nodes over the ROS-free pipelines. The only part of the package that imports rclpy."""
