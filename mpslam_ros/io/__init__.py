"""File formats and data sources: g2o, BAL, rosbag2, EuRoC/TUM/KITTI folders, trajectory files."""
