"""Keyframe database: pose, descriptors and landmarks of every keyframe, bounded in memory.

The database is the reusable map: :meth:`KeyframeDatabase.save` writes one ``.npz`` file that
:meth:`KeyframeDatabase.load` reads back bit-identically (poses stay float64). Memory is bounded two
ways: each keyframe keeps at most ``max_features`` features (those with a 3D landmark first, since
only they can verify a loop) in compact dtypes (float32 pixels and points, uint8 descriptors), and
at most ``max_appearance_keyframes`` keyframes keep their appearance at all; beyond that the
appearance of the most redundant keyframe (closest to another one) is dropped while its pose stays
in the graph.
"""

from __future__ import annotations

import json
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Union

import numpy as np

from mpslam_ros.datatypes import Keyframe

#: Written into every map file; bumped when the layout changes.
MAP_FORMAT = "mpslam_keyframe_map"
MAP_VERSION = 1


class MapFileError(ValueError):
    """A map file that cannot be read: the message names the file and what is wrong with it."""


@dataclass
class StoredKeyframe:
    """A keyframe as the database holds it (compact dtypes; ``points_cam`` NaN where unknown)."""

    id: int
    stamp_ns: int
    T_world_body: np.ndarray  # float64[4,4] odometry pose
    keypoints: np.ndarray  # float32[n,2]
    descriptors: np.ndarray  # uint8[n,32]
    landmark_ids: np.ndarray  # int64[n]
    points_cam: np.ndarray  # float32[n,3]
    K: np.ndarray  # float64[3,3]
    T_body_left: np.ndarray  # float64[4,4]
    place_descriptors: np.ndarray = field(default_factory=lambda: np.zeros((0, 32), np.uint8))
    place_keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.T_world_body, self.keypoints, self.descriptors,
                                          self.landmark_ids, self.points_cam, self.K,
                                          self.T_body_left, self.place_descriptors,
                                          self.place_keypoints)) + 16)

    @property
    def has_appearance(self) -> bool:
        return len(self.descriptors) > 0

    @property
    def recognition_descriptors(self) -> np.ndarray:
        """What place recognition indexes: the place features, else the tracking descriptors."""
        return self.place_descriptors if len(self.place_descriptors) else self.descriptors

    def to_keyframe(self) -> Keyframe:
        return Keyframe(id=self.id, stamp_ns=self.stamp_ns, T_world_body=self.T_world_body.copy(),
                        keypoints=self.keypoints.copy(), descriptors=self.descriptors.copy(),
                        landmark_ids=self.landmark_ids.copy(),
                        points_cam=self.points_cam.astype(np.float64), K=self.K.copy(),
                        T_body_left=self.T_body_left.copy(), place_descriptors=self.place_descriptors.copy(),
                        place_keypoints=self.place_keypoints.copy())


def validate_keyframe(kf: Keyframe) -> None:
    """Raise ``ValueError`` naming the keyframe and field when its arrays are inconsistent."""
    where = f"keyframe {kf.id}"
    T = np.asarray(kf.T_world_body)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"{where}: T_world_body must be a finite 4x4 matrix, got shape {T.shape}")
    n = len(kf.keypoints)
    checks = [("keypoints", kf.keypoints, (n, 2)), ("descriptors", kf.descriptors, (n, 32)),
              ("landmark_ids", kf.landmark_ids, (n,)), ("points_cam", kf.points_cam, (n, 3))]
    for name, arr, shape in checks:
        if np.asarray(arr).shape != shape:
            raise ValueError(f"{where}: {name} has shape {np.asarray(arr).shape}, expected {shape}")
    if np.asarray(kf.descriptors).dtype != np.uint8:
        raise ValueError(f"{where}: descriptors must be uint8 (binary ORB), got {np.asarray(kf.descriptors).dtype}")
    if n and not np.all(np.isfinite(kf.keypoints)):
        raise ValueError(f"{where}: keypoints contain NaN/inf")
    pd = np.asarray(getattr(kf, "place_descriptors", np.zeros((0, 32), np.uint8)))
    pk = np.asarray(getattr(kf, "place_keypoints", np.zeros((0, 4), np.float32)))
    if pd.ndim != 2 or pd.shape[1] != 32 or pd.dtype != np.uint8:
        raise ValueError(f"{where}: place_descriptors must be uint8[m, 32], got {pd.dtype}{pd.shape}")
    if pk.shape != (len(pd), 4):
        raise ValueError(f"{where}: place_keypoints has shape {pk.shape}, expected {(len(pd), 4)}")


class KeyframeDatabase:
    """Thread-safe store of keyframes keyed by id, in insertion (time) order."""

    def __init__(self, max_features: int = 1000, max_appearance_keyframes: int = 20000,
                 redundancy_radius_m: float = 0.05) -> None:
        self.max_features = int(max_features)
        self.max_appearance_keyframes = int(max_appearance_keyframes)
        self.redundancy_radius_m = float(redundancy_radius_m)
        self._frames: Dict[int, StoredKeyframe] = {}
        self._num_with_appearance = 0
        self._lock = threading.RLock()

    # -- contents -----------------------------------------------------------------------------
    def add(self, kf: Keyframe) -> StoredKeyframe:
        """Store a keyframe (compacted to ``max_features``); returns the stored record."""
        validate_keyframe(kf)
        pts = np.asarray(kf.points_cam, dtype=np.float64)
        has3d = np.all(np.isfinite(pts), axis=1) if len(pts) else np.zeros(0, bool)
        order = np.argsort(~has3d, kind="stable")[: self.max_features]  # 3D features first
        rec = StoredKeyframe(
            id=int(kf.id), stamp_ns=int(kf.stamp_ns),
            T_world_body=np.array(kf.T_world_body, dtype=np.float64),
            keypoints=np.ascontiguousarray(np.asarray(kf.keypoints, np.float32)[order]),
            descriptors=np.ascontiguousarray(np.asarray(kf.descriptors, np.uint8)[order]),
            landmark_ids=np.ascontiguousarray(np.asarray(kf.landmark_ids, np.int64)[order]),
            points_cam=np.ascontiguousarray(pts[order].astype(np.float32)),
            K=np.array(kf.K, dtype=np.float64).reshape(3, 3),
            T_body_left=np.array(kf.T_body_left, dtype=np.float64).reshape(4, 4),
            place_descriptors=np.ascontiguousarray(np.asarray(kf.place_descriptors, np.uint8)),
            place_keypoints=np.ascontiguousarray(np.asarray(kf.place_keypoints, np.float32)))
        with self._lock:
            if rec.id in self._frames:
                raise ValueError(f"keyframe {rec.id}: id already in the database")
            self._frames[rec.id] = rec
            if rec.has_appearance:
                self._num_with_appearance += 1
            while self._num_with_appearance > self.max_appearance_keyframes:
                self._drop_most_redundant_appearance()
        return rec

    def _drop_most_redundant_appearance(self) -> None:
        ids = [i for i, r in self._frames.items() if r.has_appearance]
        pos = np.array([self._frames[i].T_world_body[:3, 3] for i in ids])
        # distance of each keyframe to its nearest neighbour in time order (cheap redundancy proxy)
        d = np.full(len(ids), np.inf)
        step = np.linalg.norm(np.diff(pos, axis=0), axis=1)
        d[1:] = step
        d[:-1] = np.minimum(d[:-1], step)
        d[-1] = np.inf  # never the newest
        victim = self._frames[ids[int(np.argmin(d))]]
        victim.keypoints = victim.keypoints[:0]
        victim.descriptors = victim.descriptors[:0]
        victim.landmark_ids = victim.landmark_ids[:0]
        victim.points_cam = victim.points_cam[:0]
        victim.place_descriptors = victim.place_descriptors[:0]
        victim.place_keypoints = victim.place_keypoints[:0]
        self._num_with_appearance -= 1

    def get(self, kf_id: int) -> StoredKeyframe:
        with self._lock:
            return self._frames[kf_id]

    def __contains__(self, kf_id: int) -> bool:
        return kf_id in self._frames

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self) -> Iterator[StoredKeyframe]:
        with self._lock:
            return iter(list(self._frames.values()))

    def ids(self) -> List[int]:
        with self._lock:
            return list(self._frames.keys())

    def odometry_poses(self) -> np.ndarray:
        """float64[n,4,4] odometry poses in insertion order."""
        with self._lock:
            return np.array([r.T_world_body for r in self._frames.values()]).reshape(-1, 4, 4)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(r.nbytes for r in self._frames.values())

    @property
    def bytes_per_keyframe(self) -> float:
        with self._lock:
            return self.nbytes / max(1, len(self._frames))

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: Union[str, Path], extra: Optional[Dict[str, np.ndarray]] = None,
             meta: Optional[dict] = None) -> None:
        """Write the whole database (plus ``extra`` arrays and JSON ``meta``) to one ``.npz`` file."""
        with self._lock:
            recs = list(self._frames.values())
        counts = np.array([len(r.keypoints) for r in recs], dtype=np.int64)
        cat = lambda name, shape, dt: (np.concatenate([getattr(r, name) for r in recs]).astype(dt)
                                       if recs else np.zeros(shape, dt))
        header = {"format": MAP_FORMAT, "version": MAP_VERSION, "max_features": self.max_features,
                  "max_appearance_keyframes": self.max_appearance_keyframes,
                  "redundancy_radius_m": self.redundancy_radius_m, "meta": meta or {}}
        arrays = {
            "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
            "ids": np.array([r.id for r in recs], dtype=np.int64),
            "stamps_ns": np.array([r.stamp_ns for r in recs], dtype=np.int64),
            "T_world_body": np.array([r.T_world_body for r in recs]).reshape(-1, 4, 4),
            "K": np.array([r.K for r in recs]).reshape(-1, 3, 3),
            "T_body_left": np.array([r.T_body_left for r in recs]).reshape(-1, 4, 4),
            "feature_counts": counts,
            "keypoints": cat("keypoints", (0, 2), np.float32),
            "descriptors": cat("descriptors", (0, 32), np.uint8),
            "landmark_ids": cat("landmark_ids", (0,), np.int64),
            "points_cam": cat("points_cam", (0, 3), np.float32),
            "place_counts": np.array([len(r.place_descriptors) for r in recs], dtype=np.int64),
            "place_descriptors": cat("place_descriptors", (0, 32), np.uint8),
            "place_keypoints": cat("place_keypoints", (0, 4), np.float32),
        }
        for k, v in (extra or {}).items():
            arrays["extra_" + k] = np.asarray(v)
        path = Path(path)
        with open(path, "wb") as fh:  # a file handle keeps numpy from appending ".npz"
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: Union[str, Path]):
        """Read a map written by :meth:`save`. Returns ``(database, extra arrays, meta)``.

        Raises :class:`MapFileError` (naming the file) when it is missing, not a map, truncated or
        internally inconsistent.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise MapFileError(f"{path}: map file not found") from None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise MapFileError(f"{path}: not a readable map file ({exc})") from None
        required = ["header", "ids", "stamps_ns", "T_world_body", "K", "T_body_left",
                    "feature_counts", "keypoints", "descriptors", "landmark_ids", "points_cam"]
        missing = [k for k in required if k not in data]
        if missing:
            raise MapFileError(f"{path}: not a keyframe map (missing arrays: {', '.join(missing)})")
        try:
            header = json.loads(bytes(data["header"]).decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise MapFileError(f"{path}: corrupt header ({exc})") from None
        if header.get("format") != MAP_FORMAT or header.get("version") != MAP_VERSION:
            raise MapFileError(f"{path}: unsupported map format {header.get('format')!r} "
                               f"version {header.get('version')!r} (expected {MAP_FORMAT} v{MAP_VERSION})")
        n = len(data["ids"])
        counts = data["feature_counts"]
        total = int(counts.sum()) if len(counts) else 0
        shapes = {"stamps_ns": (n,), "T_world_body": (n, 4, 4), "K": (n, 3, 3),
                  "T_body_left": (n, 4, 4), "feature_counts": (n,), "keypoints": (total, 2),
                  "descriptors": (total, 32), "landmark_ids": (total,), "points_cam": (total, 3)}
        for k, shape in shapes.items():
            if data[k].shape != shape:
                raise MapFileError(f"{path}: array '{k}' has shape {data[k].shape}, expected {shape} "
                                   f"for {n} keyframes / {total} features")
        if np.any(counts < 0):
            raise MapFileError(f"{path}: negative feature count")
        bad = np.where(~np.all(np.isfinite(data["T_world_body"]), axis=(1, 2)))[0]
        if len(bad):
            raise MapFileError(f"{path}: keyframe {int(data['ids'][bad[0]])} (record {bad[0]}) "
                               f"has a non-finite pose")
        db = cls(max_features=header["max_features"],
                 max_appearance_keyframes=header["max_appearance_keyframes"],
                 redundancy_radius_m=header["redundancy_radius_m"])
        offsets = np.concatenate([[0], np.cumsum(counts)])
        # place features (optional: maps written before them have none)
        pcounts = data.get("place_counts", np.zeros(n, np.int64))
        pdesc = data.get("place_descriptors", np.zeros((0, 32), np.uint8))
        pkp = data.get("place_keypoints", np.zeros((0, 4), np.float32))
        ptotal = int(pcounts.sum()) if len(pcounts) else 0
        if pcounts.shape != (n,) or pdesc.shape != (ptotal, 32) or pkp.shape != (ptotal, 4) or np.any(pcounts < 0):
            raise MapFileError(f"{path}: place features have shapes {pcounts.shape} / {pdesc.shape} / "
                               f"{pkp.shape}, expected ({n},) / ({ptotal}, 32) / ({ptotal}, 4)")
        poffsets = np.concatenate([[0], np.cumsum(pcounts)])
        for i in range(n):
            a, b = int(offsets[i]), int(offsets[i + 1])
            rec = StoredKeyframe(
                id=int(data["ids"][i]), stamp_ns=int(data["stamps_ns"][i]),
                T_world_body=data["T_world_body"][i].copy(), keypoints=data["keypoints"][a:b].copy(),
                descriptors=data["descriptors"][a:b].copy(),
                landmark_ids=data["landmark_ids"][a:b].copy(),
                points_cam=data["points_cam"][a:b].copy(), K=data["K"][i].copy(),
                T_body_left=data["T_body_left"][i].copy(),
                place_descriptors=pdesc[poffsets[i]:poffsets[i + 1]].astype(np.uint8),
                place_keypoints=pkp[poffsets[i]:poffsets[i + 1]].astype(np.float32))
            if rec.id in db._frames:
                raise MapFileError(f"{path}: keyframe id {rec.id} appears twice (record {i})")
            db._frames[rec.id] = rec
            db._num_with_appearance += int(rec.has_appearance)
        extra = {k[len("extra_"):]: v for k, v in data.items() if k.startswith("extra_")}
        return db, extra, header.get("meta", {})
