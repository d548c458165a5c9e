"""Shared fixtures: paths to the shared data, and an isolated ROS 2 environment per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def euroc_dir(data_dir) -> Path:
    """The 95 real EuRoC stereo frames (a checkout without ../shared skips, naming the path)."""
    path = data_dir / "euroc_micro"
    if not path.is_dir():
        pytest.skip(f"EuRoC clip not found at {path}")
    return path


_domain_counter = [0]


@pytest.fixture
def ros_env() -> dict:
    """Environment for child ROS processes: its own ROS_DOMAIN_ID, discovery on localhost only."""
    _domain_counter[0] += 1
    # Spread over 1..100 by worker pid so parallel pytest workers never share a domain.
    domain = 1 + (os.getpid() * 7 + _domain_counter[0]) % 100
    from mpslam_ros.nodes.graph import ros_environment  # no rclpy needed: plain environment handling

    return ros_environment(domain)


@pytest.fixture
def ros_env_in_process(ros_env, monkeypatch) -> dict:
    """ros_env applied to this process too, for a test's own rclpy subscriber (recorder, probe node)."""
    from mpslam_ros.nodes.graph import DDS_ENV_KEYS

    for key in DDS_ENV_KEYS:
        monkeypatch.setenv(key, ros_env[key])
    return ros_env
