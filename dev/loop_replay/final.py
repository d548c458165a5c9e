import sys, glob, logging, dataclasses
sys.path.insert(0, __import__("os").path.dirname(__file__))
from replay import *
logging.basicConfig(level=logging.CRITICAL)
OLD = dict(odometry_sigma_m=0.02, odometry_sigma_rad=0.005, odometry_walk_m=0, odometry_walk_rad=0,
           odometry_walk_rad_per_rad=0, odometry_noise_min_loops=10 ** 9)
print(f"| run | VO ATE mm | before: final mm (loops true/false) | after: final mm (loops true/false) | live before (bench) |")
print("|---|---|---|---|---|")
for p in sorted(glob.glob(sys.argv[1])):
    rec = load(p)
    a = replay(rec, LoopClosureConfig(**OLD))
    b = replay(rec, LoopClosureConfig())
    t = lambda r: f"{1e3*r['final']:.2f} ({r['loops']-r['false']}/{r['false']})"
    live = rec.get("live", {})
    print(f"| {rec['scene']} {rec['profile']} s{rec['seed']} {rec['sensor']} | {1e3*a['vo']:.2f} | {t(a)} | {t(b)} | "
          f"{1e3*live.get('final', float('nan')):.2f} ({live.get('loops')}) |", flush=True)
