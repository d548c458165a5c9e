"""``open_dataset(spec)``: one entry point for every frame source.

``spec`` is a synthetic scene (``household``, ``handheld``, optionally ``household:60`` for the
duration in seconds), a rosbag2 (``.mcap`` file, or a folder with ``metadata.yaml``), an EuRoC ASL
folder (``mav0/`` inside), a TUM RGB-D folder (``rgb.txt``) or a KITTI odometry sequence folder
(``calib.txt`` + ``image_0/``).
"""

from __future__ import annotations

from pathlib import Path

from mpslam_ros.datatypes import FrameSource
from mpslam_ros.io.errors import DataError

#: Default length (s) of a synthetic sequence named without a duration.
DEFAULT_SYNTHETIC_DURATION_S = 60.0


def detect_kind(spec: str) -> str:
    """'synthetic', 'bag', 'euroc', 'tum' or 'kitti' (DataError when nothing matches)."""
    from mpslam_ros.sim.trajectories import SCENES

    p = Path(spec)
    if not p.exists():
        if spec.split(":", 1)[0] in SCENES:
            return "synthetic"
        raise DataError(spec, f"no such file or folder, and not a synthetic scene ({', '.join(sorted(SCENES))})")
    if p.is_file():
        if p.suffix in (".mcap", ".db3"):
            return "bag"
        raise DataError(p, "a file that is not a rosbag2 (.mcap/.db3); datasets are folders")
    if (p / "metadata.yaml").is_file():
        return "bag"
    if (p / "mav0").is_dir() or (p / "cam0" / "sensor.yaml").is_file():
        return "euroc"
    if (p / "rgb.txt").is_file():
        return "tum"
    if (p / "calib.txt").is_file() and (p / "image_0").is_dir():
        return "kitti"
    raise DataError(p, "unrecognised dataset folder (expected EuRoC mav0/, TUM rgb.txt, KITTI calib.txt + "
                       "image_0/, or a rosbag2 with metadata.yaml)")


def open_dataset(spec: str, **kw) -> FrameSource:
    """Open a dataset as a FrameSource; keyword arguments go to the reader (e.g. ``seed``,
    ``cache_dir``, ``with_depth`` for synthetic scenes, topic names for bags)."""
    spec = str(spec)
    kind = detect_kind(spec)
    if kind == "synthetic":
        from mpslam_ros.sim.sequences import load_or_generate

        scene, _, dur = spec.partition(":")
        try:
            duration = float(dur) if dur else DEFAULT_SYNTHETIC_DURATION_S
        except ValueError:
            raise DataError(spec, f"bad duration {dur!r} (expected seconds, e.g. household:60)") from None
        return load_or_generate(scene, duration, seed=kw.pop("seed", 0), **kw)
    if kind == "bag":
        from mpslam_ros.io.bags import BagSource

        return BagSource(spec, **kw)
    if kind == "euroc":
        from mpslam_ros.io.euroc import EurocSource

        return EurocSource(spec, **kw)
    if kind == "tum":
        from mpslam_ros.io.tum import TumRgbdSource

        return TumRgbdSource(spec, **kw)
    from mpslam_ros.io.kitti import KittiSource

    return KittiSource(spec, **kw)
