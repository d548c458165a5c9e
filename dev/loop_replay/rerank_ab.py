"""Replay recorded keyframe streams with bag-of-words ranking only (rerank_candidates=0) and with re-ranking (default)."""
import sys, glob, logging
sys.path.insert(0, __import__("os").path.dirname(__file__))
from replay import load, replay
from mpslam_ros.slam.loop_closure import LoopClosureConfig
logging.basicConfig(level=logging.CRITICAL)
print("| run | VO mm | BoW only (rerank 0) | re-rank 10 (default) |")
print("|---|---|---|---|")
for p in sorted(glob.glob(sys.argv[1])):
    rec = load(p)
    a = replay(rec, LoopClosureConfig(rerank_candidates=0))
    b = replay(rec, LoopClosureConfig())
    t = lambda r: f"{1e3*r['final']:.3f} ({r['loops']-r['false']}/{r['false']})"
    print(f"| {rec['scene']} {rec['profile']} s{rec['seed']} {rec['sensor']} | {1e3*a['vo']:.3f} | {t(a)} | {t(b)} |", flush=True)
