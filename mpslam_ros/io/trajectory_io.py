"""Trajectory files: TUM (``t tx ty tz qx qy qz qw``), KITTI (12 values of a 3x4 pose per line, no
stamps) and EuRoC ground-truth CSV (``t_ns, px, py, pz, qw, qx, qy, qz, ...``).

Timestamps are parsed from the decimal text exactly into integer nanoseconds (no float rounding).
KITTI files carry no stamps: pose ``i`` gets stamp ``i`` seconds, so two KITTI files associate
one-to-one by index. Any malformed line raises :class:`DataError` naming the file and line.

Timestamps that repeat or go backwards are kept in file order with a warning, as evo keeps them
(evo's readers take every line; its association then matches each pose on its own, falling back to a
linear search when the longer trajectory is unsorted), so ``mpslam eval`` gives evo's numbers on the
files users actually have. ``strict=True`` refuses such files instead, naming the line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from mpslam_ros.datatypes import Trajectory
from mpslam_ros.io.errors import DataError

PathLike = Union[str, os.PathLike]
FORMATS = ("tum", "kitti", "euroc")
log = logging.getLogger("mpslam_ros.io.trajectory_io")


def quat_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """Unit quaternions (n, 4) as x, y, z, w -> rotation matrices (n, 3, 3) (normalised first)."""
    q = np.asarray(q_xyzw, dtype=np.float64).reshape(-1, 4)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    x, y, z, w = q.T
    R = np.empty((len(q), 3, 3))
    R[:, 0, 0] = 1 - 2 * (y * y + z * z)
    R[:, 0, 1] = 2 * (x * y - z * w)
    R[:, 0, 2] = 2 * (x * z + y * w)
    R[:, 1, 0] = 2 * (x * y + z * w)
    R[:, 1, 1] = 1 - 2 * (x * x + z * z)
    R[:, 1, 2] = 2 * (y * z - x * w)
    R[:, 2, 0] = 2 * (x * z - y * w)
    R[:, 2, 1] = 2 * (y * z + x * w)
    R[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return R


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (n, 3, 3) -> unit quaternions (n, 4) as x, y, z, w with w >= 0."""
    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    q = np.empty((len(R), 4))
    for k, M in enumerate(R):
        tr = np.trace(M)
        if tr > 0:
            s = 2.0 * np.sqrt(tr + 1.0)
            q[k] = [(M[2, 1] - M[1, 2]) / s, (M[0, 2] - M[2, 0]) / s, (M[1, 0] - M[0, 1]) / s, 0.25 * s]
        else:
            i = int(np.argmax(np.diag(M)))
            j, m = (i + 1) % 3, (i + 2) % 3
            s = 2.0 * np.sqrt(max(1.0 + M[i, i] - M[j, j] - M[m, m], 1e-300))
            v = np.empty(4)
            v[i] = 0.25 * s
            v[j] = (M[j, i] + M[i, j]) / s
            v[m] = (M[m, i] + M[i, m]) / s
            v[3] = (M[m, j] - M[j, m]) / s
            q[k] = v
    q *= np.where(q[:, 3:4] < 0, -1.0, 1.0)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def seconds_text_to_ns(text: str) -> int:
    """'1305031102.160407' -> 1305031102160407000 exactly (also '1.2e3' via float as a fallback)."""
    s = text.strip()
    neg = s.startswith("-")
    if neg or s.startswith("+"):
        s = s[1:]
    if s.replace(".", "", 1).isdigit():
        whole, _, frac = s.partition(".")
        ns = int(whole or "0") * 1_000_000_000 + int((frac + "000000000")[:9] or "0")
        return -ns if neg else ns
    return int(round(float(text) * 1e9))


def _data_lines(path: Path):
    """(line number, stripped text) of the non-empty, non-comment lines of a text file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    # utf-8-sig: a leading byte-order mark (files saved by some Windows editors) is skipped, as evo does
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if line and not line.startswith(("#", "%", "//")):
                yield lineno, line


def _floats(path, lineno, fields, n) -> np.ndarray:
    if len(fields) < n:
        raise DataError(path, f"expected {n} numbers, got {len(fields)}", lineno)
    try:
        vals = np.array([float(f) for f in fields[:n]])
    except ValueError:
        raise DataError(path, f"not a number in {' '.join(fields[:n])[:80]!r}", lineno) from None
    if not np.all(np.isfinite(vals)):
        raise DataError(path, "NaN or infinite value", lineno)
    return vals


def _finish(path, stamps, poses, linenos, strict: bool = False) -> Trajectory:
    """Trajectory of the parsed lines; repeated / decreasing stamps are kept (warned) or refused (strict)."""
    if not stamps:
        raise DataError(path, "empty trajectory (no pose lines)")
    stamps = np.array(stamps, dtype=np.int64)
    d = np.diff(stamps)
    if np.any(d <= 0):
        k = int(np.nonzero(d <= 0)[0][0]) + 1
        n_dup, n_back = int(np.count_nonzero(d == 0)), int(np.count_nonzero(d < 0))
        what = "repeats" if d[k - 1] == 0 else "goes back"
        if strict:
            raise DataError(path, f"timestamps not strictly increasing: the stamp of pose {k} {what}", linenos[k])
        log.warning("%s:%d: timestamps not strictly increasing (%d repeated, %d going back); poses kept in "
                    "file order, as evo keeps them", path, linenos[k], n_dup, n_back)
    return Trajectory(stamps, np.array(poses))


def read_tum(path: PathLike, strict: bool = False) -> Trajectory:
    stamps, poses, linenos = [], [], []
    for lineno, line in _data_lines(path):
        linenos.append(lineno)
        fields = line.replace(",", " ").split()
        vals = _floats(path, lineno, fields, 8)
        T = np.eye(4)
        T[:3, :3] = quat_to_matrix(vals[4:8])[0]
        T[:3, 3] = vals[1:4]
        try:
            stamps.append(seconds_text_to_ns(fields[0]))
        except ValueError:
            raise DataError(path, f"bad timestamp {fields[0]!r}", lineno) from None
        poses.append(T)
    return _finish(path, stamps, poses, linenos, strict)


def read_kitti(path: PathLike, strict: bool = False) -> Trajectory:
    """KITTI poses; ``strict`` is accepted for symmetry (stamps are the line indices, always increasing)."""
    poses, linenos = [], []
    for lineno, line in _data_lines(path):
        linenos.append(lineno)
        vals = _floats(path, lineno, line.split(), 12)
        if len(line.split()) != 12:
            raise DataError(path, f"expected 12 numbers (a 3x4 pose), got {len(line.split())}", lineno)
        T = np.eye(4)
        T[:3, :] = vals.reshape(3, 4)
        poses.append(T)
    return _finish(path, [i * 1_000_000_000 for i in range(len(poses))], poses, linenos, strict)


def read_euroc_csv(path: PathLike, strict: bool = False) -> Trajectory:
    stamps, poses, linenos = [], [], []
    for lineno, line in _data_lines(path):
        linenos.append(lineno)
        fields = [f.strip() for f in line.split(",")]
        vals = _floats(path, lineno, fields, 8)
        T = np.eye(4)
        T[:3, :3] = quat_to_matrix(vals[[5, 6, 7, 4]])[0]  # file order w, x, y, z
        T[:3, 3] = vals[1:4]
        try:
            stamps.append(int(fields[0]))
        except ValueError:
            try:  # evo parses the stamp as a float: accept '1.4037e18' / '1403715273262142976.0' too
                stamps.append(int(round(float(fields[0]))))
            except ValueError:
                raise DataError(path, f"bad nanosecond timestamp {fields[0]!r}", lineno) from None
        poses.append(T)
    return _finish(path, stamps, poses, linenos, strict)


def detect_format(path: PathLike) -> str:
    """'euroc' for comma-separated files, 'kitti' for 12 columns, 'tum' for 8."""
    for lineno, line in _data_lines(path):
        if "," in line or str(path).endswith(".csv"):
            return "euroc"
        n = len(line.split())
        if n == 12:
            return "kitti"
        if n == 8:
            return "tum"
        raise DataError(path, f"unknown trajectory format: {n} columns (TUM has 8, KITTI 12)", lineno)
    raise DataError(path, "empty trajectory file")


def read_trajectory(path: PathLike, fmt: Optional[str] = None, strict: bool = False) -> Trajectory:
    """Read a TUM, KITTI or EuRoC-CSV trajectory (format guessed from the content when ``fmt`` is None).

    Repeated or decreasing timestamps are kept in file order with a warning (evo's behaviour);
    ``strict=True`` raises :class:`DataError` at the first such line instead.
    """
    fmt = (fmt or detect_format(path)).lower()
    readers = {"tum": read_tum, "kitti": read_kitti, "euroc": read_euroc_csv}
    if fmt not in readers:
        raise ValueError(f"unknown trajectory format {fmt!r}; choose from {FORMATS}")
    return readers[fmt](path, strict=strict)


def write_tum(path: PathLike, traj: Trajectory) -> None:
    """TUM text: stamp in seconds with 9 decimals (exact ns), position, quaternion x y z w."""
    q = matrix_to_quat(traj.poses[:, :3, :3]) if len(traj) else np.zeros((0, 4))
    with open(path, "w") as fh:
        fh.write("# timestamp tx ty tz qx qy qz qw\n")
        for s, T, qq in zip(traj.stamps_ns, traj.poses, q):
            sec, ns = divmod(int(s), 1_000_000_000)
            fh.write(f"{sec}.{ns:09d} " + " ".join(f"{v:.9g}" for v in (*T[:3, 3], *qq)) + "\n")


def write_kitti(path: PathLike, traj: Trajectory) -> None:
    with open(path, "w") as fh:
        for T in traj.poses:
            fh.write(" ".join(f"{v:.9e}" for v in T[:3, :].ravel()) + "\n")


def write_euroc_csv(path: PathLike, traj: Trajectory) -> None:
    q = matrix_to_quat(traj.poses[:, :3, :3]) if len(traj) else np.zeros((0, 4))
    with open(path, "w") as fh:
        fh.write("#timestamp [ns],p_RS_R_x [m],p_RS_R_y [m],p_RS_R_z [m],q_RS_w [],q_RS_x [],q_RS_y [],q_RS_z []\n")
        for s, T, qq in zip(traj.stamps_ns, traj.poses, q):
            fh.write(f"{int(s)}," + ",".join(f"{v:.9g}" for v in (*T[:3, 3], qq[3], qq[0], qq[1], qq[2])) + "\n")
