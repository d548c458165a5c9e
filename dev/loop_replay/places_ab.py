"""Issue 15's "rendered-world loop closure results do not get worse": replay recorded keyframe streams with
the place recognition before issue 15 (vocabulary trained on the rendered house, the tracking features'
single-scale unoriented descriptors, bag-of-words ranking with islands) and with today's (online vocabulary,
oriented multi-scale place features, re-ranking). Same VO, same verification and pose graph."""
import copy, glob, logging, sys

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__))
from replay import load, replay  # noqa: E402
from mpslam_ros.slam.loop_closure import LoopClosureConfig  # noqa: E402

logging.basicConfig(level=logging.CRITICAL)


def without_place_features(rec):
    """The recording as a sender before issue 15 made it: no place features (tracking descriptors only)."""
    rec = dict(rec)
    rec["keyframes"] = [copy.copy(kf) for kf in rec["keyframes"]]
    for kf in rec["keyframes"]:
        kf.place_descriptors = np.zeros((0, 32), np.uint8)
        kf.place_keypoints = np.zeros((0, 4), np.float32)
    return rec


if __name__ == "__main__":
    print("| run | VO ATE mm | before issue 15: final mm (loops true/false) | today: final mm (loops true/false) |")
    print("|---|---|---|---|")
    for p in sorted(glob.glob(sys.argv[1])):
        rec = load(p)
        a = replay(without_place_features(rec), LoopClosureConfig(vocabulary_path="rendered", rerank_candidates=0))
        b = replay(rec, LoopClosureConfig())
        t = lambda r: f"{1e3 * r['final']:.2f} ({r['loops'] - r['false']}/{r['false']})"  # noqa: E731
        print(f"| {rec['scene']} {rec['profile']} s{rec['seed']} {rec['sensor']} | {1e3 * a['vo']:.2f} | {t(a)} | {t(b)} |",
              flush=True)
