"""Feature detection with spatial spread, KLT tracking, stereo matching and ORB descriptors.

All functions work on rectified mono8 images (see :mod:`mpslam_ros.frontend.rectify`) and return
float32 pixel arrays plus boolean masks, so the caller keeps its per-feature bookkeeping (landmark
ids) aligned by simple indexing.
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

import cv2
import numpy as np


#: Keypoints closer than this to the border get no ORB descriptor (half the 31 px ORB patch).
ORB_BORDER = 16


def detect_features(image: np.ndarray, max_features: int, existing: Optional[np.ndarray] = None,
                    min_distance: float = 12.0, fast_threshold: int = 20,
                    min_fast_threshold: int = 5, border: int = ORB_BORDER) -> np.ndarray:
    """Detect up to ``max_features`` FAST corners, at most one per grid cell (bucketing).

    The grid cell size is chosen so that the image holds about ``max_features`` cells, which spreads
    features over the whole image instead of clustering on the most textured object. Cells that
    already contain one of the ``existing`` points (n,2) are skipped, and new corners keep
    ``min_distance`` pixels from them. On weak texture the FAST threshold is halved until
    ``min_fast_threshold``. Returns float32[k, 2].
    """
    h, w = image.shape[:2]
    if max_features <= 0:
        return np.zeros((0, 2), np.float32)
    cell = max(8.0, float(np.sqrt(w * h / max_features)))
    ncols = int(np.ceil(w / cell))
    nrows = int(np.ceil(h / cell))
    occupied = np.zeros(ncols * nrows, dtype=bool)
    mask = np.zeros((h, w), np.uint8)
    mask[border:h - border, border:w - border] = 255
    if existing is not None and len(existing):
        ex = np.asarray(existing, dtype=np.float32).reshape(-1, 2)
        inside = (ex[:, 0] >= 0) & (ex[:, 0] < w) & (ex[:, 1] >= 0) & (ex[:, 1] < h)
        ex = ex[inside]
        cidx = (ex[:, 1] // cell).astype(int) * ncols + (ex[:, 0] // cell).astype(int)
        occupied[cidx] = True
        r = int(round(min_distance))
        for x, y in ex:
            cv2.circle(mask, (int(x), int(y)), r, 0, -1)
    wanted = max_features - int(occupied.sum())
    if wanted <= 0:
        return np.zeros((0, 2), np.float32)
    threshold = fast_threshold
    pts = np.zeros((0, 2), np.float32)
    while True:
        fast = cv2.FastFeatureDetector_create(threshold=int(threshold), nonmaxSuppression=True)
        kps = fast.detect(image, mask)
        if kps:
            xy = np.array([k.pt for k in kps], dtype=np.float32)
            resp = np.array([k.response for k in kps], dtype=np.float32)
            cidx = (xy[:, 1] // cell).astype(int) * ncols + (xy[:, 0] // cell).astype(int)
            keep = ~occupied[cidx]
            xy, resp, cidx = xy[keep], resp[keep], cidx[keep]
            order = np.argsort(-resp, kind="stable")
            _, first = np.unique(cidx[order], return_index=True)  # strongest corner per cell
            chosen = order[first]
            chosen = chosen[np.argsort(-resp[chosen], kind="stable")]
            pts = _keep_apart(xy[chosen], min_distance, wanted)
        if len(pts) >= 0.5 * wanted or threshold <= min_fast_threshold:
            return pts
        threshold = max(min_fast_threshold, threshold // 2)


def _keep_apart(pts: np.ndarray, min_distance: float, limit: int) -> np.ndarray:
    """Greedy (strongest first) selection of at most ``limit`` points ``min_distance`` apart:
    neighbouring cells can otherwise pick the two sides of the same corner."""
    kept = []
    d2 = min_distance * min_distance
    for p in pts:
        if kept:
            k = np.asarray(kept)
            if np.min(((k - p) ** 2).sum(1)) < d2:
                continue
        kept.append(p)
        if len(kept) >= limit:
            break
    return np.asarray(kept, np.float32).reshape(-1, 2)


def track_klt(prev: np.ndarray, cur: np.ndarray, pts: np.ndarray, guess: Optional[np.ndarray] = None,
              win_size: int = 21, levels: int = 3, fb_threshold: float = 1.0,
              image_size: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """np.ndarrayal Lucas-Kanade from ``prev`` to ``cur`` with a forward-backward consistency check.

    ``guess`` (n,2) seeds the search (e.g. landmarks projected with the motion-model pose). A track
    is kept when LK converges both ways and returns within ``fb_threshold`` pixels of its start.
    Returns ``(pts_cur float32[n,2], ok bool[n])``.
    """
    n = len(pts)
    if n == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, bool)
    p0 = np.ascontiguousarray(pts, dtype=np.float32).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
    flags = 0
    p1 = None
    if guess is not None:
        p1 = np.ascontiguousarray(guess, dtype=np.float32).reshape(-1, 1, 2).copy()
        flags = cv2.OPTFLOW_USE_INITIAL_FLOW
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, p1, winSize=(win_size, win_size),
                                          maxLevel=levels, criteria=crit, flags=flags)
    p0b, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, p0.copy(), winSize=(win_size, win_size),
                                           maxLevel=levels, criteria=crit,
                                           flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
    p1 = p1.reshape(-1, 2)
    fb = np.linalg.norm(p0b.reshape(-1, 2) - p0.reshape(-1, 2), axis=1)
    ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < fb_threshold) & np.isfinite(p1).all(1)
    if image_size is not None:
        w, h = image_size
        ok &= (p1[:, 0] >= 0) & (p1[:, 0] <= w - 1) & (p1[:, 1] >= 0) & (p1[:, 1] <= h - 1)
    return p1, ok


def match_stereo(left: np.ndarray, right: np.ndarray, pts: np.ndarray,
                 guess_ur: Optional[np.ndarray] = None, half_window: int = 5,
                 min_disparity: float = 0.5, max_disparity: float = 120.0, guess_radius: int = 8,
                 min_score: float = 0.8) -> Tuple[np.ndarray, np.ndarray]:
    """Find each left feature on the same row of the rectified right image (ZNCC along the row).

    Zero-mean normalised cross-correlation of a (2*half_window+1)^2 patch is insensitive to the
    gain/exposure difference between the two cameras (KLT is not, and lost half the matches on
    EuRoC). The search covers disparities [min_disparity, max_disparity], or ``guess_radius``
    pixels around ``guess_ur`` (n,) where it is finite (e.g. from a landmark's known depth). A match
    needs a score >= ``min_score`` and a unique peak (no second peak within 95% of it); its u is
    refined to subpixel by a parabola through the scores around the peak.
    Returns ``(u_right float64[n] (NaN where unmatched), ok bool[n])``.
    """
    n = len(pts)
    ur = np.full(n, np.nan)
    if n == 0:
        return ur, np.zeros(0, bool)
    h, w = left.shape[:2]
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    g = None if guess_ur is None else np.asarray(guess_ur, dtype=np.float64)
    r = half_window
    for i in range(n):
        x, y = pts[i]
        xi, yi = int(round(x)), int(round(y))
        if yi - r < 0 or yi + r >= h or xi - r < 0 or xi + r >= w:
            continue
        if g is not None and np.isfinite(g[i]):
            lo = int(np.floor(g[i])) - guess_radius
            hi = int(np.ceil(g[i])) + guess_radius
        else:
            lo = int(np.floor(x - max_disparity))
            hi = int(np.ceil(x - min_disparity))
        lo = max(lo, r)
        hi = min(hi, w - 1 - r, xi)  # disparity >= 0 on the integer grid
        if hi - lo < 2:
            continue
        tpl = left[yi - r:yi + r + 1, xi - r:xi + r + 1]
        strip = right[yi - r:yi + r + 1, lo - r:hi + r + 1]
        res = cv2.matchTemplate(strip, tpl, cv2.TM_CCOEFF_NORMED).ravel()
        k = int(np.argmax(res))
        best = res[k]
        if not best >= min_score or k == 0 or k == len(res) - 1:
            continue  # weak, or the peak sits on the edge of the search range
        others = res.copy()
        others[max(0, k - 2):k + 3] = -1.0
        if others.max() > 0.95 * best:
            continue  # repetitive texture: ambiguous
        a, b, c = res[k - 1], best, res[k + 1]
        den = a - 2.0 * b + c
        sub = 0.5 * (a - c) / den if den < 0 else 0.0
        ur[i] = lo + k + sub + (x - xi)  # keep the left feature's subpixel offset
    disp = pts[:, 0] - ur
    ok = np.isfinite(ur) & (disp >= min_disparity) & (disp <= max_disparity)
    ur[~ok] = np.nan
    return ur, ok


_ORB = None


def orb_descriptors(image: np.ndarray, pts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """ORB (rotated BRIEF) descriptors of the given pixels at the finest scale.

    Returns ``(descriptors uint8[n, 32], ok bool[n])``: ORB drops keypoints too close to the border
    to fit its 31x31 patch; their rows are zero and ``ok`` is False.
    """
    global _ORB
    if _ORB is None:
        _ORB = cv2.ORB_create(nfeatures=10000, nlevels=1, edgeThreshold=ORB_BORDER, patchSize=31)
    n = len(pts)
    desc = np.zeros((n, 32), np.uint8)
    ok = np.zeros(n, bool)
    if n == 0:
        return desc, ok
    kps = [cv2.KeyPoint(float(x), float(y), 31.0, -1.0, 0.0, 0, i) for i, (x, y) in enumerate(pts)]
    kps, d = _ORB.compute(image, kps)
    if d is not None and len(kps):
        idx = np.array([k.class_id for k in kps], dtype=int)
        desc[idx] = d
        ok[idx] = True
    return desc, ok


class PlaceFeatures(NamedTuple):
    """Oriented multi-scale ORB features of one image, for place recognition."""

    keypoints: np.ndarray  # float32[n, 2] pixels
    sizes: np.ndarray  # float32[n] keypoint diameter (pixels at level 0): the pyramid scale
    angles: np.ndarray  # float32[n] orientation in degrees
    descriptors: np.ndarray  # uint8[n, 32]


_PLACE_ORB: Dict[Tuple[int, float, int], "cv2.ORB"] = {}


def place_features(image: np.ndarray, max_features: int = 500, scale_factor: float = 1.2,
                   levels: int = 8) -> PlaceFeatures:
    """Oriented, multi-scale ORB (OpenCV's detector + rBRIEF, as ORB-SLAM / DBoW2 use it).

    The tracking features (:func:`detect_features` + :func:`orb_descriptors`) are single-scale and
    unoriented: fine for frame-to-frame matching, but a revisit seen from further away or with the
    camera rolled no longer matches. Place recognition gets these instead (~500 per image).
    """
    key = (int(max_features), float(scale_factor), int(levels))
    orb = _PLACE_ORB.get(key)
    if orb is None:
        orb = _PLACE_ORB[key] = cv2.ORB_create(nfeatures=key[0], scaleFactor=key[1], nlevels=key[2])
    img = np.ascontiguousarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.dtype != np.uint8:
        raise ValueError(f"place_features: expected a mono8 image, got dtype {img.dtype}")
    kps, desc = orb.detectAndCompute(img, None)
    if len(kps) < max_features // 4:  # weak texture or blur (hand-held): ORB's FAST threshold 20 -> 7
        orb.setFastThreshold(7)
        kps, desc = orb.detectAndCompute(img, None)
        orb.setFastThreshold(20)
    if desc is None or not kps:
        return PlaceFeatures(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32),
                             np.zeros((0, 32), np.uint8))
    return PlaceFeatures(np.array([k.pt for k in kps], np.float32), np.array([k.size for k in kps], np.float32),
                         np.array([k.angle for k in kps], np.float32), np.ascontiguousarray(desc, np.uint8))


def image_texture(image: np.ndarray) -> Tuple[float, float]:
    """``(mean, std)`` intensity on a 4x-subsampled image: a cheap black/textureless-frame test."""
    sub = image[::4, ::4]
    return float(sub.mean()), float(sub.std())
