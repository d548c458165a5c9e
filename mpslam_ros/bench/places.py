"""``mpslam bench places IMAGES_DIR``: place recognition on real images vs brute-force ORB matching.

Every image, in order, is first a query against all earlier images (the ``--exclude-recent`` newest
excepted: they trivially look alike), then added to the database. Two retrievers run side by side:

- ``bow``: the package's place recognition (:class:`~mpslam_ros.slam.place_recognition.PlaceRecognizer`
  over oriented multi-scale ORB, :func:`~mpslam_ros.frontend.features.place_features`) with the online
  vocabulary (default) or a trained file (``--vocabulary``), candidates grouped into islands;
- ``brute``: OpenCV ORB (``--baseline-features``, default 1,000 oriented multi-scale features),
  ratio-test matches counted against every earlier image; the most matches wins.

Ground truth (``--gt``): a KITTI ``poses.txt`` (one camera-to-world pose per image), an EuRoC folder's
``state_groundtruth_estimate0`` (interpolated at the image stamps), or a loop-matrix image (N x N,
white = same place). From poses, two images show the same place when their cameras are within
``--max-distance`` metres and their viewing directions within ``--max-angle`` degrees.

Printed: top-1 / top-k hit rate over the queries that have an earlier true match, recall at 100 %
precision of the top-1 candidate (its raw score, and after verification: fundamental-matrix RANSAC
inliers of the place features plus temporal consistency with the previous query's candidate),
per-query time, vocabulary size; the PR curves go to ``--png``. ``--scaling`` times one query against
databases of 100 / 1,000 / 10,000 keyframes (synthesized from the images' descriptors, see
:func:`scaling_times`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

HELP = "place recognition on real images: top-1/top-k hit rate, recall at 100% precision, PR curve, vs brute-force ORB"
DESCRIPTION = __doc__

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pgm", ".bmp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mpslam_ros.sim.profiles import PROFILE_HELP, profile_spec

    parser.add_argument("images", help="folder of images (a KITTI sequence folder, an EuRoC folder, or plain images), "
                                       "or a rendered scene with its duration, e.g. household:60 (left images, "
                                       "ground truth from the rendered poses)")
    parser.add_argument("--seed", type=int, default=0, help="rendered scene: seed of world and motion (default 0)")
    parser.add_argument("--profile", default="realistic", type=profile_spec,
                        help="rendered scene (default realistic): " + PROFILE_HELP)
    parser.add_argument("--gt", default=None,
                        help="poses.txt (KITTI), an EuRoC folder, or a loop-matrix image; default: the "
                             "folder's own poses.txt / EuRoC ground truth")
    parser.add_argument("--max-distance", type=float, default=None,
                        help="same place: cameras within this many metres (default 10 for KITTI, 1 for EuRoC)")
    parser.add_argument("--max-angle", type=float, default=30.0,
                        help="same place: viewing directions within this many degrees (default 30)")
    parser.add_argument("--exclude-recent", type=int, default=3,
                        help="the newest N images are never candidates (default 3)")
    parser.add_argument("--every", type=int, default=1, help="use every n-th image (default 1)")
    parser.add_argument("--max-images", type=int, default=0, help="stop after this many images (0: all)")
    parser.add_argument("--features", type=int, default=500, help="place-recognition ORB features per image (default 500)")
    parser.add_argument("--baseline-features", type=int, default=1000,
                        help="ORB features per image of the brute-force baseline (default 1000)")
    parser.add_argument("--vocabulary", default="",
                        help="trained vocabulary file (mpslam vocab train); default: the online vocabulary")
    parser.add_argument("--top-k", type=int, default=5, help="k of the top-k hit rate (default 5)")
    parser.add_argument("--rerank", type=int, default=10,
                        help="re-rank this many best bag-of-words candidates by direct descriptor matching "
                             "(loop.rerank_candidates, default 10; 0: bag-of-words score only)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the brute-force baseline")
    parser.add_argument("--scaling", default="",
                        help="comma-separated database sizes to time a query at, e.g. 100,1000,10000")
    parser.add_argument("--png", default=None, help="write the precision-recall curves to this PNG")
    parser.add_argument("--json", default=None, help="append the result row to this JSON-lines file")


# ------------------------------------------------------------------ inputs

def find_images(root: Path) -> List[Path]:
    """Image files of a dataset folder, in name (= time) order: EuRoC ``mav0/cam0/data``, KITTI
    ``image_0`` / ``image_l``, else the folder itself."""
    for sub in ("mav0/cam0/data", "cam0/data", "image_0", "image_l", "image_2", "."):
        d = root / sub
        if d.is_dir():
            files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if files:
                return files
    raise ValueError(f"{root}: no images found (looked in mav0/cam0/data, image_0, image_l and the folder)")


def read_kitti_poses(path: Path, n: int) -> np.ndarray:
    """float64[n,4,4] camera-to-world poses from a KITTI poses.txt (12 numbers per line)."""
    rows = []
    for k, line in enumerate(Path(path).read_text().splitlines()):
        vals = line.split()
        if not vals:
            continue
        if len(vals) != 12:
            raise ValueError(f"{path}:{k + 1}: expected 12 numbers, got {len(vals)}")
        T = np.eye(4)
        T[:3, :] = np.array(vals, float).reshape(3, 4)
        rows.append(T)
    if len(rows) < n:
        raise ValueError(f"{path}: {len(rows)} poses for {n} images")
    return np.array(rows[:n])


def read_euroc_poses(root: Path, stamps_ns: np.ndarray) -> np.ndarray:
    """Body poses of the EuRoC ground truth at the image stamps (nearest sample within 20 ms)."""
    csv = next((p for p in (root / "mav0/state_groundtruth_estimate0/data.csv",
                            root / "state_groundtruth_estimate0/data.csv") if p.exists()), None)
    if csv is None:
        raise ValueError(f"{root}: no state_groundtruth_estimate0/data.csv")
    data = np.loadtxt(csv, delimiter=",", comments="#")
    t = data[:, 0].astype(np.int64)
    k = np.clip(np.searchsorted(t, stamps_ns), 1, len(t) - 1)
    k = np.where(np.abs(t[k - 1] - stamps_ns) < np.abs(t[k] - stamps_ns), k - 1, k)
    if np.any(np.abs(t[k] - stamps_ns) > 20_000_000):
        raise ValueError(f"{csv}: no ground truth within 20 ms of some image stamps")
    out = np.tile(np.eye(4), (len(k), 1, 1))
    for i, j in enumerate(k):
        w, x, y, z = data[j, 4:8]
        out[i, :3, :3] = _quat_wxyz_to_R(w, x, y, z)
        out[i, :3, 3] = data[j, 1:4]
    return out


def _quat_wxyz_to_R(w: float, x: float, y: float, z: float) -> np.ndarray:
    n = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def same_place_from_poses(poses: np.ndarray, max_distance: float, max_angle_deg: float) -> np.ndarray:
    """bool[n,n]: cameras within ``max_distance`` and relative rotation within ``max_angle_deg``."""
    t = poses[:, :3, 3]
    dist = np.linalg.norm(t[:, None] - t[None], axis=2)
    R = poses[:, :3, :3]
    cos = (np.einsum("iab,jab->ij", R, R) - 1.0) / 2.0  # trace(R_i^T R_j) = 1 + 2 cos(angle)
    angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    return (dist <= max_distance) & (angle <= max_angle_deg)


def same_place_from_matrix(path: Path, n: int) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"{path}: not a readable loop-matrix image")
    if img.shape != (n, n):
        raise ValueError(f"{path}: loop matrix is {img.shape[1]}x{img.shape[0]}, expected {n}x{n} for {n} images")
    m = img > 127
    return m | m.T


# ------------------------------------------------------------------ evaluation

@dataclass
class Retrieval:
    """Per query: ranked candidate ids, the top-1 score, the top-1's verification inliers."""

    ranked: List[List[int]] = field(default_factory=list)
    score: List[float] = field(default_factory=list)
    inliers: List[int] = field(default_factory=list)
    #: the same top-1 verified with the tracking features (FAST + unoriented single-scale ORB, as VO
    #: sends them) instead of the place features: what the choice of verification features changes
    inliers_tracking: List[int] = field(default_factory=list)
    seconds: List[float] = field(default_factory=list)


def recall_at_full_precision(scores: np.ndarray, correct: np.ndarray, positives: int) -> Tuple[float, np.ndarray]:
    """Largest recall (over ``positives`` queries with a true match) at precision 1 when accepting
    the top-1 candidates whose score is above a threshold; also the PR curve (precision, recall) rows."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(correct[order])
    fp = np.cumsum(~correct[order])
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(positives, 1)
    full = recall[(precision >= 1.0) & (scores[order] > -np.inf)]
    best = float(full.max()) if len(full) else 0.0
    # the first rejected candidate cannot be kept when it ties with an accepted one: cut at score changes
    return best, np.column_stack([precision, recall])


def evaluate_retrieval(res: Retrieval, same: np.ndarray, valid: np.ndarray, exclude_recent: int, top_k: int,
                       consistency: int = 3, min_inliers: int = 0) -> dict:
    """Hit rates and recall at 100 % precision of one retriever's results."""
    n = len(res.ranked)
    has_true = np.array([valid[i] and same[i, : max(0, i - exclude_recent)].any() for i in range(n)])
    top1 = np.array([bool(r) and same[i, r[0]] for i, r in enumerate(res.ranked)])
    topk = np.array([any(same[i, j] for j in r[:top_k]) for i, r in enumerate(res.ranked)])
    positives = int(has_true.sum())
    score = np.array([s if r else -np.inf for s, r in zip(res.score, res.ranked)], float)
    score[~valid] = -np.inf
    r_raw, pr_raw = recall_at_full_precision(score, top1, positives)
    out = {"queries": int(valid.sum()), "with_true_match": positives,
           "top1": int((top1 & has_true).sum()), "topk": int((topk & has_true).sum()),
           "recall100_raw": r_raw, "pr_raw": pr_raw}
    if res.inliers:
        inl = np.array(res.inliers, float)
        # temporal consistency: the previous query's top-1 lies within `consistency` images of this one's
        consistent = np.zeros(n, bool)
        for i in range(1, n):
            if res.ranked[i] and res.ranked[i - 1]:
                consistent[i] = abs(res.ranked[i][0] - res.ranked[i - 1][0]) <= consistency
        v = np.where(consistent & (inl >= min_inliers) & valid, inl, -np.inf)
        out["recall100_verified"], out["pr_verified"] = recall_at_full_precision(v, top1, positives)
        out["false_accepts_any_threshold"] = int((np.isfinite(v) & ~top1).sum())
    t = np.array(res.seconds) * 1e3
    out["ms_median"] = float(np.median(t)) if len(t) else 0.0
    out["ms_p90"] = float(np.percentile(t, 90)) if len(t) else 0.0
    return out


def run_places(images: Sequence[np.ndarray], exclude_recent: int, features: int, baseline_features: int,
               vocabulary_path: str = "", baseline: bool = True, progress: bool = True,
               island_gap: int = 2, candidates: int = 10, rerank: int = 10) -> Tuple[Retrieval, Retrieval, object]:
    """Both retrievers over the images in order; returns (bow, brute, recognizer)."""
    import cv2
    from tqdm import tqdm

    from mpslam_ros.frontend.features import detect_features, orb_descriptors, place_features
    from mpslam_ros.slam.online_vocabulary import OnlineBinaryVocabulary
    from mpslam_ros.slam.place_recognition import BinaryVocabulary, PlaceRecognizer
    from mpslam_ros.slam.verification import epipolar_inliers, match_descriptors
    from mpslam_ros.slam.vo import VOConfig

    def tracking_features(img: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        pts = detect_features(img, VOConfig.max_features)
        d, ok = orb_descriptors(img, pts)
        return pts[ok], d[ok]

    vocab = BinaryVocabulary.load(vocabulary_path) if vocabulary_path else OnlineBinaryVocabulary()
    rec = PlaceRecognizer(vocab, min_score=0.0, min_relative_score=0.0, exclude_recent=exclude_recent,
                          max_candidates=candidates, island_gap=island_gap, rerank=rerank)
    bow, brute = Retrieval(), Retrieval()
    feats, base_feats, trk_feats = [], [], []
    orb = cv2.ORB_create(nfeatures=baseline_features)
    for i, img in enumerate(tqdm(images, desc="places", unit="img", disable=not progress)):
        pf = place_features(img, features)
        feats.append(pf)
        trk_feats.append(tracking_features(img))
        t0 = time.perf_counter()
        found = rec.query(pf.descriptors, exclude=list(range(max(0, i - exclude_recent), i))) if i else []
        bow.seconds.append(time.perf_counter() - t0)
        rec.add(i, pf.descriptors)
        bow.ranked.append([k for k, _ in found])
        bow.score.append(found[0][1] if found else 0.0)
        if found:
            c = feats[found[0][0]]
            bow.inliers.append(epipolar_inliers(pf.keypoints, pf.descriptors, c.keypoints, c.descriptors))
            bow.inliers_tracking.append(epipolar_inliers(*trk_feats[-1], *trk_feats[found[0][0]]))
        else:
            bow.inliers.append(0)
            bow.inliers_tracking.append(0)
        if not baseline:
            continue
        kps, desc = orb.detectAndCompute(img, None)
        uv = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
        desc = np.zeros((0, 32), np.uint8) if desc is None else desc
        base_feats.append((uv, desc))
        t0 = time.perf_counter()
        counts = [len(match_descriptors(desc, base_feats[j][1], 0.8, 80)) for j in range(max(0, i - exclude_recent))]
        brute.seconds.append(time.perf_counter() - t0)
        order = list(np.argsort(-np.array(counts), kind="stable")) if counts else []
        brute.ranked.append([int(j) for j in order[:candidates]])
        brute.score.append(float(counts[order[0]]) if counts else 0.0)
        if order:
            j = order[0]
            brute.inliers.append(epipolar_inliers(uv, desc, base_feats[j][0], base_feats[j][1]))
        else:
            brute.inliers.append(0)
    return bow, brute, rec


def scaling_times(pool: np.ndarray, sizes: Sequence[int], per_keyframe: int = 300, flip_prob: float = 0.1,
                  queries: int = 20, seed: int = 0, progress: bool = True, rerank: int = 10,
                  brute_queries: int = 3) -> List[dict]:
    """Time per query (median, p90; and per insert) with databases of ``sizes`` keyframes.

    The keyframes are synthesized from ``pool`` (descriptors of the real images): each takes
    ``per_keyframe`` random descriptors of the pool with every bit flipped with ``flip_prob`` (~26 of
    256 bits), so some match existing words and many create new ones, as a robot exploring new
    places does. Queries are fresh draws of the same kind. A query's time is split into its stages:
    word lookup, inverted-index scoring (the rest of :meth:`PlaceRecognizer.query` before re-ranking)
    and re-ranking. Brute force (a ratio-test match against every keyframe, the baseline of
    :func:`run_places`) is timed on ``brute_queries`` of the queries at every size.
    """
    from tqdm import tqdm

    from mpslam_ros.slam.loop_synth import _noisy_descriptors
    from mpslam_ros.slam.online_vocabulary import OnlineBinaryVocabulary
    from mpslam_ros.slam.place_recognition import PlaceRecognizer
    from mpslam_ros.slam.verification import match_descriptors

    rng = np.random.default_rng(seed)
    draw = lambda: _noisy_descriptors(rng, pool[rng.integers(0, len(pool), per_keyframe)], flip_prob)
    vocab = OnlineBinaryVocabulary()
    rec = PlaceRecognizer(vocab, min_score=0.0, min_relative_score=0.0, exclude_recent=0, max_candidates=10,
                          island_gap=2, rerank=rerank)
    kept: List[np.ndarray] = []  # for brute force
    rows = []
    target = sorted(sizes)
    add_times: List[float] = []
    with tqdm(total=target[-1], desc="synthetic database", unit="kf", disable=not progress) as bar:
        for size in target:
            while len(rec) < size:
                d = draw()
                t0 = time.perf_counter()
                rec.add(len(rec), d)
                add_times.append(time.perf_counter() - t0)
                kept.append(d)
                bar.update(1)
            qs = [draw() for _ in range(queries)]
            t, t_words, t_score = [], [], []
            for q in qs:
                t0 = time.perf_counter()
                vec = vocab.bow_vector(q)
                t1 = time.perf_counter()
                rec._score_array(vec)
                t2 = time.perf_counter()
                rec.query(q, vec=vec, exclude=[])
                t3 = time.perf_counter()
                t.append(t1 - t0 + t3 - t2)
                t_words.append(t1 - t0)
                t_score.append(t2 - t1)
            ms = 1e3 * np.array(t)
            row = {"keyframes": size, "words": vocab.num_words, "query_ms_median": float(np.median(ms)),
                   "query_ms_p90": float(np.percentile(ms, 90)),
                   "words_ms_median": 1e3 * float(np.median(t_words)),
                   "score_ms_median": 1e3 * float(np.median(t_score)),
                   "insert_ms_median": 1e3 * float(np.median(add_times[-min(len(add_times), 100):]))}
            tb = []
            for q in qs[:brute_queries]:
                t0 = time.perf_counter()
                for d in kept[:size]:
                    match_descriptors(q, d, 0.8, 80)
                tb.append(time.perf_counter() - t0)
            row["brute_ms_median"] = 1e3 * float(np.median(tb))
            row["brute_ms_p90"] = 1e3 * float(np.percentile(tb, 90))
            rows.append(row)
    return rows


def plot_pr(path: str, curves: Dict[str, np.ndarray], title: str) -> None:
    from mpslam_ros.evaluation.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, pr in curves.items():
        if len(pr):
            ax.plot(pr[:, 1], pr[:, 0], label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_ground_truth(root: Path, gt: Optional[str], files: List[Path], max_distance: Optional[float],
                      max_angle: float) -> Tuple[np.ndarray, str]:
    """(same-place matrix, description) for the images."""
    n = len(files)
    if gt is None:
        if (root / "poses.txt").exists():
            gt = str(root / "poses.txt")
        elif (root / "mav0" / "state_groundtruth_estimate0").is_dir():
            gt = str(root)
        else:
            raise ValueError(f"{root}: no ground truth (give --gt poses.txt, an EuRoC folder or a loop-matrix image)")
    p = Path(gt)
    if p.is_dir():
        stamps = np.array([int(f.stem) for f in files], np.int64)
        poses = read_euroc_poses(p, stamps)
        d = 1.0 if max_distance is None else max_distance
        return same_place_from_poses(poses, d, max_angle), f"EuRoC poses, {d:g} m / {max_angle:g} deg"
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return same_place_from_matrix(p, n), f"loop matrix {p.name}"
    d = 10.0 if max_distance is None else max_distance
    return same_place_from_poses(read_kitti_poses(p, n), d, max_angle), f"KITTI poses, {d:g} m / {max_angle:g} deg"


def render_scene(spec: str, seed: int, profile: str, every: int, max_images: int, max_distance: Optional[float],
                 max_angle: float, progress: bool = True) -> Tuple[List[np.ndarray], np.ndarray, str]:
    """Left images of a rendered scene ``NAME[:SECONDS]`` (every ``every``-th frame) and the same-place
    matrix from its left-camera poses (default 1 m / ``max_angle``)."""
    from tqdm import tqdm

    from mpslam_ros.sim.sequences import SimOptions, SyntheticSequence, cached_world
    from mpslam_ros.sim.trajectories import SCENE_WORLDS

    name, _, dur = spec.partition(":")
    if name not in ("household", "handheld", "office"):
        raise ValueError(f"{spec}: not a folder nor a rendered scene (household, handheld or office[:SECONDS])")
    world = cached_world(seed, None, SCENE_WORLDS[name]) if name in SCENE_WORLDS else cached_world(seed)
    seq = SyntheticSequence(name, float(dur or 60), seed, SimOptions.for_profile(profile), world=world)
    idx = np.arange(0, len(seq), max(1, every))
    if max_images:
        idx = idx[:max_images]
    images = [seq.render_frame(int(i)).left for i in tqdm(idx, desc="render", unit="img", disable=not progress)]
    T_wl, _ = seq.camera_poses(seq.poses[idx])
    d = 1.0 if max_distance is None else max_distance
    return images, same_place_from_poses(T_wl, d, max_angle), f"rendered {profile}, seed {seed}, {d:g} m / {max_angle:g} deg"


def main(args: argparse.Namespace) -> int:
    import cv2

    root = Path(args.images)
    if not root.is_dir():
        try:
            images, same, gt_desc = render_scene(args.images, args.seed, args.profile, args.every, args.max_images,
                                                 args.max_distance, args.max_angle)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        try:
            files = find_images(root)
            same, gt_desc = load_ground_truth(root, args.gt, files, args.max_distance, args.max_angle)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        idx = np.arange(0, len(files), max(1, args.every))
        if args.max_images:
            idx = idx[: args.max_images]
        same = same[np.ix_(idx, idx)]
        images = []
        for i in idx:
            img = cv2.imread(str(files[i]), cv2.IMREAD_GRAYSCALE)
            if img is None:
                print(f"error: {files[i]}: not a readable image", file=sys.stderr)
                return 2
            images.append(img)
    bow, brute, rec = run_places(images, args.exclude_recent, args.features, args.baseline_features,
                                 args.vocabulary, baseline=not args.no_baseline, rerank=args.rerank)
    valid = np.ones(len(images), bool)
    vocab = rec.vocabulary
    print(f"\n{root}: {len(images)} images, ground truth: {gt_desc}, newest {args.exclude_recent} excluded")
    rows = [("bow (" + ("online" if not args.vocabulary else Path(args.vocabulary).name) + ")", bow),
            ("  verified w/ tracking", Retrieval(bow.ranked, bow.score, inliers=bow.inliers_tracking, seconds=bow.seconds))]
    if not args.no_baseline:
        rows.append((f"brute-force ORB {args.baseline_features}", brute))
    hdr = (f"{'retriever':<24} {'queries':>7} {'w/ match':>8} {'top-1':>7} {'top-' + str(args.top_k):>7} "
           f"{'R@100P raw':>10} {'R@100P verif':>12} {'ms/query':>9} {'p90 ms':>7}")
    print(hdr)
    print("-" * len(hdr))
    result = {"images": str(root), "n": len(images), "gt": gt_desc, "exclude_recent": args.exclude_recent,
              "words": int(vocab.num_words), "vocabulary_bytes": int(vocab.nbytes)}
    curves = {}
    for name, r in rows:
        ev = evaluate_retrieval(r, same, valid, args.exclude_recent, args.top_k)
        p = max(ev["with_true_match"], 1)
        print(f"{name:<24} {ev['queries']:>7} {ev['with_true_match']:>8} {ev['top1'] / p:>7.1%} {ev['topk'] / p:>7.1%} "
              f"{ev['recall100_raw']:>10.1%} {ev.get('recall100_verified', 0.0):>12.1%} {ev['ms_median']:>9.2f} "
              f"{ev['ms_p90']:>7.2f}")
        curves[name + " (score)"] = ev.pop("pr_raw")
        if "pr_verified" in ev:
            curves[name + " (verified)"] = ev.pop("pr_verified")
        result[name] = ev
    print(f"vocabulary: {vocab.num_words} words, {vocab.nbytes / 1e6:.2f} MB")
    if args.scaling:
        pool = np.concatenate([d for d in _pool(images, args.features)])
        sizes = [int(s) for s in args.scaling.split(",") if s.strip()]
        srows = scaling_times(pool, sizes, rerank=args.rerank)
        print(f"\nper-query time vs database size (synthetic keyframes from these images' descriptors; "
              f"re-rank {args.rerank})")
        print(f"{'keyframes':>9} {'words':>9} {'query ms':>9} {'p90 ms':>7} {'lookup':>7} {'scoring':>7} "
              f"{'insert ms':>9} {'brute ms':>9} {'p90 ms':>8}")
        for r in srows:
            print(f"{r['keyframes']:>9} {r['words']:>9} {r['query_ms_median']:>9.2f} {r['query_ms_p90']:>7.2f} "
                  f"{r['words_ms_median']:>7.2f} {r['score_ms_median']:>7.2f} {r['insert_ms_median']:>9.2f} "
                  f"{r['brute_ms_median']:>9.1f} {r['brute_ms_p90']:>8.1f}")
        result["scaling"] = srows
    if args.png:
        plot_pr(args.png, curves, f"{root.name}: top-1 precision-recall")
        print(f"PR curves -> {args.png}")
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps(result, default=float) + "\n")
    return 0


def _pool(images: Sequence[np.ndarray], features: int) -> List[np.ndarray]:
    from mpslam_ros.frontend.features import place_features

    return [place_features(img, features).descriptors for img in images]
