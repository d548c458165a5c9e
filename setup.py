"""ament_python package setup; also installable with plain pip on a machine without ROS 2."""

import os
from glob import glob

from setuptools import find_packages, setup

package_name = "mpslam_ros"

# ROS 2 Kilted from PyPI wheels, pinned as one set (on a ROS 2 install these come from the distro).
ROS_WHEELS = [
    "ros-rclpy==9.1.2",
    "ros-rmw-fastrtps-cpp==9.3.3",
    "ros-std-msgs==5.5.1",
    "ros-sensor-msgs==5.5.1",
    "ros-geometry-msgs==5.5.1",
    "ros-nav-msgs==5.5.1",
    "ros-visualization-msgs==5.5.1",
    "ros-diagnostic-msgs==5.5.1",
    "ros-std-srvs==5.5.1",
]

#: colcon's build of the ament_python package (the `colcon` command sets COLCON=1), not pip's: there
#: bin/mpslam puts `mpslam` on PATH; pip makes its own `mpslam` console script in the venv's bin.
COLCON_BUILD = "COLCON" in os.environ

#: Checked with numba 0.68.1 / numpy 2.4 (Python 3.11): installs without a GPU or CUDA toolkit.
NUMBA_CUDA = "numba-cuda>=0.30"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
        *([("bin", ["bin/mpslam"])] if COLCON_BUILD else []),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.26",
        "scipy>=1.11",
        "numba>=0.60",
        "opencv-python-headless>=4.8",
        "rosbags>=0.10",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "PyYAML>=6.0",
        "setuptools",
    ],
    extras_require={
        "ros": ROS_WHEELS,
        # numba-cuda: the CUDA backend of the CGNR kernels (mpslam_ros.solvers.cuda; no GPU needed to install).
        # In "test" too, so the suite checks the CUDA kernels under numba's simulator on machines without a GPU.
        "cuda": [NUMBA_CUDA],
        # (launch_testing's pytest plugin does not load under pytest 9, ros2/launch#979: setup.cfg turns it off)
        "test": ["pytest>=7", "pytest-timeout>=2.1", NUMBA_CUDA],
        # Python dependencies of the upstream launch stack that dev.sh installs from ../shared/vendor
        # (launch, launch_ros, launch_testing, ros2cli: on no registry), and colcon to build the package.
        "launch": ["osrf-pycommon>=2.0", "lark>=1.1", "importlib-metadata", "psutil", "argcomplete",
                   "packaging", "catkin-pkg>=1.0", "colcon-common-extensions>=0.3"],
        "bench": ["gtsam>=4.2", "pyceres>=2.3", "pycolmap>=3.10", "evo>=1.25"],
    },
    zip_safe=True,
    maintainer="mpslam_ros developers",
    maintainer_email="mpslam@example.org",
    description="Visual SLAM for ROS 2 whose heavy numerics run in mixed precision (fp16/fp32/fp64).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "mpslam = mpslam_ros.cli:main",
            "vo_node = mpslam_ros.nodes.vo_node:main",
            "loop_closure_node = mpslam_ros.nodes.loop_closure_node:main",
            "bag_player = mpslam_ros.nodes.bag_player:main",
        ],
    },
)
