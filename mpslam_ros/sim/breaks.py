"""Breaks in a frame stream, as a robot meets them: stalls, blackouts and kidnaps.

:class:`BrokenSource` wraps any :class:`~mpslam_ros.datatypes.FrameSource` (a synthetic scene, a
bag, an EuRoC folder) and applies :class:`StreamBreak` s to it, so the same sequence can be run with
and without the break and the results compared:

- ``stall``: the frames of the interval never arrive (a CPU stall, a dropped USB transfer, a busy
  VO skipping to the newest image); the stamps of later frames are unchanged, so the gap is visible
  in image time;
- ``blackout``: the frames arrive but are black (lens cap, light off, exposure failure);
- ``kidnap``: the frames of the interval are removed *and* later stamps are moved back by the
  interval, so the sequence resumes at another place with no gap in time (the robot was carried).

A break is written ``KIND@START+LENGTH`` in seconds from the first frame, e.g. ``stall@5+6.5``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import numpy as np

from mpslam_ros.datatypes import FrameSource, StereoFrame, Trajectory

BREAK_KINDS = ("stall", "blackout", "kidnap")


@dataclass(frozen=True)
class StreamBreak:
    """One break: ``kind`` over ``[start_s, start_s + length_s)`` of the sequence's time."""

    kind: str
    start_s: float
    length_s: float

    def __post_init__(self) -> None:
        if self.kind not in BREAK_KINDS:
            raise ValueError(f"unknown break kind {self.kind!r}; choose from {', '.join(BREAK_KINDS)}")
        if not (self.start_s >= 0 and self.length_s > 0):
            raise ValueError(f"break {self}: start must be >= 0 and length > 0")

    @classmethod
    def parse(cls, spec: str) -> "StreamBreak":
        """``KIND@START+LENGTH`` (seconds), e.g. ``stall@5+6.5``; ValueError naming the spec."""
        try:
            kind, rest = spec.split("@", 1)
            start, length = rest.split("+", 1)
            return cls(kind.strip(), float(start), float(length))
        except ValueError as exc:
            raise ValueError(f"bad break {spec!r}: expected KIND@START+LENGTH in seconds with KIND one of "
                             f"{', '.join(BREAK_KINDS)} ({exc})") from None

    def __str__(self) -> str:
        return f"{self.kind}@{self.start_s:g}+{self.length_s:g}"


class BrokenSource:
    """A FrameSource with breaks applied (see the module docstring). Frames keep their ``index`` in
    the original sequence; :meth:`ground_truth` follows the same stamps as the frames."""

    def __init__(self, source: FrameSource, breaks: Sequence[StreamBreak]) -> None:
        self.source = source
        self.breaks: List[StreamBreak] = sorted(breaks, key=lambda b: b.start_s)
        self.rig = source.rig
        self.name = source.name + "".join(f"+{b}" for b in self.breaks)
        self._t0: Optional[int] = None

    def _first_stamp(self) -> int:
        if self._t0 is None:
            gt = self.source.ground_truth()
            if gt is not None and len(gt):
                self._t0 = int(gt.stamps_ns[0])
            else:
                self._t0 = int(next(iter(self.source)).stamp_ns)
        return self._t0

    def _fate(self, stamp_ns: int):
        """(kind of the break covering this stamp or None, nanoseconds to move the stamp back)."""
        t = (stamp_ns - self._first_stamp()) * 1e-9
        shift_s = 0.0
        for b in self.breaks:
            if b.start_s <= t < b.start_s + b.length_s:
                return b.kind, 0
            if b.kind == "kidnap" and t >= b.start_s + b.length_s:
                shift_s += b.length_s
        return None, int(round(shift_s * 1e9))

    def __len__(self) -> int:
        return len(self.source) - sum(1 for _ in self._removed())

    def _removed(self):
        gt = self.source.ground_truth()
        if gt is None:
            return iter(())
        return (s for s in gt.stamps_ns if self._fate(int(s))[0] in ("stall", "kidnap"))

    def __iter__(self) -> Iterator[StereoFrame]:
        for frame in self.source:
            kind, shift = self._fate(int(frame.stamp_ns))
            if kind in ("stall", "kidnap"):
                continue
            if kind == "blackout":
                frame.left = np.zeros_like(frame.left)
                if frame.right is not None:
                    frame.right = np.zeros_like(frame.right)
                if frame.depth is not None:
                    frame.depth = np.zeros_like(frame.depth)
            frame.stamp_ns = int(frame.stamp_ns) - shift
            yield frame

    def ground_truth(self) -> Optional[Trajectory]:
        gt = self.source.ground_truth()
        if gt is None:
            return None
        keep, stamps = [], []
        for k, s in enumerate(gt.stamps_ns):
            kind, shift = self._fate(int(s))
            if kind in ("stall", "kidnap"):
                continue
            keep.append(k)
            stamps.append(int(s) - shift)
        return Trajectory(np.asarray(stamps, np.int64), gt.poses[keep])
