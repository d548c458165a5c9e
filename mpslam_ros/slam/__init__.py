"""SLAM pipelines (ROS-free): visual odometry with sliding-window BA, and loop closure with PGO."""
