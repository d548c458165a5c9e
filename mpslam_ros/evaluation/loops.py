"""Accepted loops against ground truth: true (the relative pose is right) or false (a look-alike place,
or a right place with a wrong pose)."""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

from mpslam_ros.datatypes import Trajectory
from mpslam_ros.geometry import lie

#: A loop is true when its relative pose is within these of the ground truth's.
TRUE_LOOP_MAX_TRANS_M = 0.3
TRUE_LOOP_MAX_ROT_DEG = 5.0


def loop_errors(edges: Sequence, keyframe_stamps: dict, gt: Trajectory, max_dt_ns: int = 5_000_000) -> List[dict]:
    """Per loop edge ``(query_id, match_id, T_match_query)``: the error of its relative pose against
    the ground truth at the two keyframes' stamps (``keyframe_stamps``: id -> stamp_ns), and whether
    it is a true loop (NaN errors and ``true=False`` when a stamp has no ground truth)."""
    out = []
    for q, m, T in edges:
        T = np.asarray(T, dtype=np.float64)
        poses = []
        for kid in (q, m):
            stamp = keyframe_stamps.get(kid)
            k = int(np.argmin(np.abs(gt.stamps_ns - stamp))) if stamp is not None else -1
            poses.append(gt.poses[k] if k >= 0 and abs(int(gt.stamps_ns[k]) - stamp) <= max_dt_ns else None)
        if poses[0] is None or poses[1] is None:
            out.append({"query": q, "match": m, "trans_err_m": float("nan"), "rot_err_deg": float("nan"),
                        "true": False})
            continue
        T_gt = np.linalg.inv(poses[1]) @ poses[0]
        E = np.linalg.inv(T_gt) @ T
        rot = float(np.degrees(lie.rotation_angle(E[:3, :3])))
        trans = float(np.linalg.norm(E[:3, 3]))
        out.append({"query": q, "match": m, "trans_err_m": trans, "rot_err_deg": rot,
                    "gt_distance_m": float(np.linalg.norm(T_gt[:3, 3])),
                    "true": trans <= TRUE_LOOP_MAX_TRANS_M and rot <= TRUE_LOOP_MAX_ROT_DEG})
    return out
