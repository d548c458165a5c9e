"""Bundle Adjustment in the Large (BAL) text format: reader and writer (plain or .bz2).

Layout (https://grail.cs.washington.edu/projects/bal/)::

    <num_cameras> <num_points> <num_observations>
    <camera_index> <point_index> <x> <y>        (num_observations lines)
    <camera parameter>                          (9 per camera: rodrigues(3), t(3), f, k1, k2)
    <point coordinate>                          (3 per point)

Parameters are one per line in the published files; any whitespace layout is accepted. Errors
name the file and the 1-based line number of the offending value.
"""

from __future__ import annotations

import bz2
import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Union

import numpy as np

PathLike = Union[str, Path]


class BALFormatError(ValueError):
    """Malformed BAL input; the message names the file and line."""


@dataclass
class BALProblem:
    """A BAL problem. Cameras: (rodrigues w (3), t (3), f, k1, k2); p = -P/P.z (camera looks down -z)."""

    cameras: np.ndarray  # float64[n, 9]
    points: np.ndarray  # float64[m, 3]
    obs_cam: np.ndarray  # int64[k]
    obs_pt: np.ndarray  # int64[k]
    obs_uv: np.ndarray  # float64[k, 2]

    @property
    def num_cameras(self) -> int:
        return len(self.cameras)

    @property
    def num_points(self) -> int:
        return len(self.points)

    @property
    def num_observations(self) -> int:
        return len(self.obs_cam)

    def copy(self) -> "BALProblem":
        return BALProblem(self.cameras.copy(), self.points.copy(), self.obs_cam.copy(),
                          self.obs_pt.copy(), self.obs_uv.copy())


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".bz2":
        return bz2.open(path, mode + "t")
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t")
    return open(path, mode)


def read_bal(path: PathLike) -> BALProblem:
    """Read a BAL file (``.txt``, ``.bz2`` or ``.gz``).

    Raises :class:`BALFormatError` naming file and line for a malformed header or observation,
    a non-numeric, NaN or infinite value, an index out of range, or a truncated file.
    """
    path = Path(path)
    try:
        with _open_text(path, "r") as fh:
            lines = fh.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BALFormatError(f"{path}: cannot read BAL file: {exc}") from exc

    def fail(lineno: int, msg: str) -> BALFormatError:
        return BALFormatError(f"{path}:{lineno}: {msg}")

    it = ((i + 1, ln) for i, ln in enumerate(lines) if ln.strip())
    try:
        lineno, header = next(it)
    except StopIteration:
        raise BALFormatError(f"{path}: empty file") from None
    parts = header.split()
    if len(parts) != 3:
        raise fail(lineno, f"header must be '<num_cameras> <num_points> <num_observations>', got {header!r}")
    try:
        n_cam, n_pt, n_obs = (int(p) for p in parts)
    except ValueError:
        raise fail(lineno, f"header counts must be integers, got {header!r}") from None
    if min(n_cam, n_pt, n_obs) < 0:
        raise fail(lineno, f"negative count in header {header!r}")

    obs_cam = np.empty(n_obs, dtype=np.int64)
    obs_pt = np.empty(n_obs, dtype=np.int64)
    obs_uv = np.empty((n_obs, 2), dtype=np.float64)
    for k in range(n_obs):
        try:
            lineno, ln = next(it)
        except StopIteration:
            raise fail(len(lines), f"file ends after {k} of {n_obs} observations") from None
        f = ln.split()
        if len(f) != 4:
            raise fail(lineno, f"observation must be '<camera> <point> <x> <y>', got {ln.strip()!r}")
        try:
            c, p = int(f[0]), int(f[1])
            u, v = float(f[2]), float(f[3])
        except ValueError:
            raise fail(lineno, f"malformed observation {ln.strip()!r}") from None
        if not (0 <= c < n_cam):
            raise fail(lineno, f"camera index {c} out of range [0, {n_cam})")
        if not (0 <= p < n_pt):
            raise fail(lineno, f"point index {p} out of range [0, {n_pt})")
        if not (np.isfinite(u) and np.isfinite(v)):
            raise fail(lineno, f"non-finite observation {ln.strip()!r}")
        obs_cam[k], obs_pt[k] = c, p
        obs_uv[k, 0], obs_uv[k, 1] = u, v

    n_val = 9 * n_cam + 3 * n_pt
    values = np.empty(n_val, dtype=np.float64)
    j = 0
    for lineno, ln in it:
        for tok in ln.split():
            if j >= n_val:
                raise fail(lineno, f"unexpected extra value {tok!r} (expected {n_val} parameters)")
            try:
                x = float(tok)
            except ValueError:
                raise fail(lineno, f"malformed number {tok!r}") from None
            if not np.isfinite(x):
                what = "camera" if j < 9 * n_cam else "point"
                raise fail(lineno, f"non-finite {what} parameter {tok!r}")
            values[j] = x
            j += 1
    if j < n_val:
        raise fail(len(lines), f"file ends after {j} of {n_val} camera/point parameters")
    return BALProblem(values[: 9 * n_cam].reshape(n_cam, 9), values[9 * n_cam:].reshape(n_pt, 3),
                      obs_cam, obs_pt, obs_uv)


def write_bal(path: PathLike, problem: BALProblem) -> None:
    """Write ``problem`` in BAL text format (compressed when ``path`` ends in .bz2 / .gz)."""
    path = Path(path)
    out = [f"{problem.num_cameras} {problem.num_points} {problem.num_observations}"]
    out.extend(f"{c} {p}     {u!r} {v!r}" for c, p, (u, v) in
               zip(problem.obs_cam.tolist(), problem.obs_pt.tolist(), problem.obs_uv.tolist()))
    # repr() is the shortest text that reads back to the same fp64 bits: the round trip is exact.
    out.extend(repr(x) for x in problem.cameras.ravel().tolist())
    out.extend(repr(x) for x in problem.points.ravel().tolist())
    with _open_text(path, "w") as fh:
        fh.write("\n".join(out) + "\n")
