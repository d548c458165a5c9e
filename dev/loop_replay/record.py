"""Record VO keyframe streams (what loop closure sees) for offline loop-closure replay, via run_pipeline."""
import copy, pickle, sys, time, os
from pathlib import Path
import numpy as np
import mpslam_ros.cli.run as runmod
from mpslam_ros.cli.run import open_synthetic, run_pipeline, evaluate
from mpslam_ros.slam.loop_closure import LoopClosure, LoopClosureConfig
from mpslam_ros.slam.vo import VOConfig

DIR = os.environ.get("REC_DIR", "/tmp/loop_replay")
KFS = []
class Recording(LoopClosure):
    def add_keyframe(self, kf):
        KFS.append(copy.deepcopy(kf))
        return super().add_keyframe(kf)
runmod._make_loop_closure = lambda config=None: Recording(config or LoopClosureConfig())

def record(scene, seed, sensor, profile=os.environ.get("REC_PROFILE", "realistic")):
    out = Path(f"{DIR}/{scene.replace(':','_')}_{profile}_s{seed}_{sensor}.pkl")
    if out.exists():
        return
    KFS.clear()
    src = open_synthetic(scene, seed, profile, rgbd=(sensor == "rgbd"), progress=False)
    t0 = time.time()
    run = run_pipeline(src, VOConfig(precision="mixed"), progress=False)
    gt = src.ground_truth()
    kf_of_frame, last, ids = [], -1, {kf.id for kf in KFS}
    # frame -> last keyframe: rebuild from stamps
    kst = sorted((kf.stamp_ns, kf.id) for kf in KFS)
    j = 0
    for s in run.stamps_ns:
        while j < len(kst) and kst[j][0] <= s:
            last = kst[j][1]; j += 1
        kf_of_frame.append(last)
    live = dict(vo=evaluate(run, run.poses_vo)["ate_rmse_m"], final=evaluate(run)["ate_rmse_m"], loops=run.loops)
    with open(out, "wb") as f:
        pickle.dump(dict(scene=scene, seed=seed, sensor=sensor, profile=profile, stamps=run.stamps_ns,
                         poses=run.poses_vo, states=run.states, kf_of_frame=kf_of_frame, keyframes=list(KFS),
                         gt_stamps=gt.stamps_ns, gt_poses=gt.poses, live=live), f)
    print(out.name, len(run.stamps_ns), "frames", len(KFS), "kf", f"{time.time()-t0:.0f}s", live, flush=True)

if __name__ == "__main__":
    scenes = sys.argv[1].split(","); seeds = [int(s) for s in sys.argv[2].split(",")]; sensors = sys.argv[3].split(",")
    for sc in scenes:
        for se in seeds:
            for sn in sensors:
                record(sc, se, sn)
