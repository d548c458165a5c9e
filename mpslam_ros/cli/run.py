"""``mpslam run DATASET -o OUTDIR``: the visual-odometry (+ loop closure) pipeline offline.

Reads any supported dataset (EuRoC / TUM / KITTI folder, rosbag2, or a synthetic scene name such
as ``household:60``), runs :class:`~mpslam_ros.slam.vo.VisualOdometry` frame by frame (and
:class:`~mpslam_ros.slam.loop_closure.LoopClosure` on its keyframes unless ``--no-loop-closure``)
with a progress bar, and writes to OUTDIR:

- ``trajectory.tum``: body poses (the frame the dataset's ground truth uses: EuRoC body, synthetic
  base_link), loop-closure corrected when it is on; ``trajectory_vo.tum``: raw odometry;
- ``keyframes_vo.tum`` / ``keyframes_corrected.tum``: the keyframe poses before and after loop
  closure (the pose graph's own output; the second only with loop closure on);
- ``timings.csv``: per frame stamp, tracking state, tracked features and the time of every stage;
- ``report.txt`` / ``report.json``: frames, states, speed (median / p95 per stage) and, when the
  dataset has ground truth, ATE and RPE (drift per metre travelled);
- ``trajectory.png`` / ``errors.png``: plots.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

HELP = "run visual odometry (+ loop closure) over a dataset offline; write trajectory, timings, report, plots"
DESCRIPTION = __doc__

DRIFT_SEGMENTS_M = (1.0, 10.0)
#: Default bound on the wait for loop closure at the end of a run. A warm solve of a few hundred
#: keyframes takes < 1 s; the first solve on an empty numba cache compiles the PGO kernels, 1-4 min
#: on a busy 2-core machine.
LOOP_CLOSURE_TIMEOUT_S = 900.0
#: While waiting for loop closure, a progress line this often (seconds).
LOOP_CLOSURE_WAIT_REPORT_S = 10.0
STAGES = ("rectify", "track", "pnp", "stereo", "detect", "descriptors", "ba", "total")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mpslam_ros.sim.profiles import PROFILE_HELP, profile_spec

    parser.add_argument("dataset",
                        help="EuRoC / TUM / KITTI folder, rosbag2 (.mcap file or sqlite3 folder), or a "
                             "synthetic scene name with optional duration, e.g. household:60")
    parser.add_argument("-o", "--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--precision", choices=["fp64", "fp32", "fp16", "mixed"], default="mixed",
                        help="precision preset of the sliding-window BA (default mixed)")
    parser.add_argument("--window", type=int, default=20,
                        help="keyframes in the sliding BA window (default 20)")
    parser.add_argument("--ba-iterations", type=int, default=None,
                        help="LM iterations per window BA (default: VOConfig's)")
    parser.add_argument("--no-ba", action="store_true", help="PnP-only odometry (no window BA)")
    parser.add_argument("--no-loop-closure", action="store_true",
                        help="odometry only (no place recognition / pose-graph correction)")
    parser.add_argument("--loop-closure-timeout", type=float, default=LOOP_CLOSURE_TIMEOUT_S, metavar="SECONDS",
                        help="after the last frame, wait at most this long for loop closure's pending "
                             "pose-graph solve (the first run on an empty numba cache compiles its kernels: "
                             f"minutes); if it does not finish, the report says so (default {LOOP_CLOSURE_TIMEOUT_S:g})")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--seed", type=int, default=0, help="seed of a synthetic sequence (default 0)")
    parser.add_argument("--profile", default="clean", type=profile_spec,
                        help="camera effects of a synthetic sequence (default clean): " + PROFILE_HELP)
    parser.add_argument("--rgbd", action="store_true",
                        help="synthetic sequence as an RGB-D camera (left image + depth) instead of stereo")
    parser.add_argument("--break", dest="breaks", action="append", default=[], metavar="KIND@START+LENGTH",
                        help="apply a break to the input stream, seconds from its start (repeatable): "
                             "stall (frames never arrive), blackout (black frames) or kidnap (frames "
                             "removed and later stamps moved back: the robot resumes elsewhere), "
                             "e.g. --break stall@5+6.5")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (rendering, frames) nor repeated lines while waiting for loop closure")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every VO event (lost frames, reinitialisations) to the console")


@dataclass
class RunOutput:
    """Everything one pipeline run produced (in memory)."""

    name: str
    stamps_ns: np.ndarray
    poses_vo: np.ndarray  # float64[n,4,4] T_odom_body
    poses: np.ndarray  # float64[n,4,4] T_map_body (== poses_vo without loop closure)
    states: List[str]
    num_tracked: np.ndarray
    timings: List[Dict[str, float]]
    reasons: List[str]
    num_keyframes: int = 0
    loops: int = 0
    wall_s: float = 0.0
    ground_truth: object = None
    #: keyframe id -> (stamp_ns, T_odom_body from VO, T_map_body after loop closure)
    keyframes: Dict[int, tuple] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def has_pose(self) -> np.ndarray:
        """bool[n]: frames with a pose measurement (see mpslam_ros.slam.vo.NO_POSE_STATES)."""
        from mpslam_ros.slam.vo import NO_POSE_STATES

        return np.array([s not in NO_POSE_STATES for s in self.states], bool)

    def trajectory(self, poses: np.ndarray):
        """The frames with a pose measurement as a Trajectory (``poses``: poses_vo or poses)."""
        from mpslam_ros.datatypes import Trajectory

        keep = self.has_pose
        return Trajectory(self.stamps_ns[keep], np.asarray(poses).reshape(-1, 4, 4)[keep])


def run_pipeline(source, config=None, loop_closure: bool = True, max_frames: Optional[int] = None,
                 progress: bool = True, loop_closure_config=None,
                 loop_closure_timeout: float = LOOP_CLOSURE_TIMEOUT_S) -> RunOutput:
    """Run VO (and loop closure) over a :class:`~mpslam_ros.datatypes.FrameSource`.

    After the last frame it waits (at most ``loop_closure_timeout`` s, with a progress line) for the
    loop closure's pending pose-graph solve; ``extra["loop_closure_final"]`` says what the final
    trajectory includes (see :func:`finish_loop_closure`).
    """
    from mpslam_ros.slam.vo import VisualOdometry, VOConfig

    vo = VisualOdometry(source.rig, config or VOConfig())
    lc = _make_loop_closure(loop_closure_config) if loop_closure else None
    n_total = len(source) if max_frames is None else min(len(source), max_frames)
    stamps, poses, states, tracked, timings, reasons = [], [], [], [], [], []
    kf_of_frame: List[int] = []  # last keyframe id at or before each frame (-1: none yet)
    kf_pose: Dict[int, np.ndarray] = {}
    kf_stamp: Dict[int, int] = {}
    dropped_keyframes: List[int] = []
    last_kf = -1
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_total, desc=f"vo {source.name}", unit="frame")
    t0 = time.perf_counter()
    try:
        for i, frame in enumerate(source):
            if i >= n_total:
                break
            res = vo.process(frame)
            if res.tracking_state == "skipped":
                reasons.append(res.reason)
                if bar is not None:
                    bar.update(1)
                continue
            if res.keyframe is not None:
                last_kf = res.keyframe.id
                kf_pose[last_kf] = res.keyframe.T_world_body.copy()
                kf_stamp[last_kf] = res.keyframe.stamp_ns
                if lc is not None:
                    try:
                        lc.add_keyframe(res.keyframe)
                    except ValueError as exc:  # a malformed keyframe: report it, keep the odometry going
                        logging.getLogger("mpslam_ros.loop_closure").warning(
                            "keyframe %d (stamp %d) dropped by loop closure: %s", last_kf, res.stamp_ns, exc)
                        dropped_keyframes.append(last_kf)
            stamps.append(res.stamp_ns)
            poses.append(res.T_world_body)
            states.append(res.tracking_state)
            tracked.append(res.num_tracked)
            timings.append(dict(res.timings))
            reasons.append(res.reason)
            kf_of_frame.append(last_kf)
            if bar is not None:
                bar.update(1)
                if i % 10 == 0:
                    bar.set_postfix(state=res.tracking_state, tracked=res.num_tracked)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    extra = {"keyframes_dropped_by_loop_closure": dropped_keyframes,
             "vo_events": dataclasses.asdict(vo.stats), "vo_maps": vo.map_id + 1}
    poses_vo = np.array(poses).reshape(-1, 4, 4)
    corrected = poses_vo.copy()
    loops = 0
    kf_corr: Dict[int, np.ndarray] = {}
    if lc is not None:
        extra["loop_closure_final"] = finish_loop_closure(lc, loop_closure_timeout, progress=progress)
        kf_corr = lc.corrected_poses()
        edges = lc.loops()
        loops = len(edges)
        extra["loop_edges"] = [[int(e.query_id), int(e.match_id), np.asarray(e.T_match_query).tolist()]
                               for e in edges]
        kf_maps = lc.keyframe_maps()
        extra["loop_closure_events"] = dataclasses.asdict(lc.stats)
        extra["keyframes_not_aligned_with_first_map"] = sum(1 for _, ok in kf_maps.values() if not ok)
        for k, kid in enumerate(kf_of_frame):
            if kid in kf_corr and kid in kf_pose:  # frame = corrected keyframe x odometry since it
                corrected[k] = kf_corr[kid] @ np.linalg.inv(kf_pose[kid]) @ poses_vo[k]
            else:
                corrected[k] = lc.T_map_odom() @ poses_vo[k]
        lc.close()
    return RunOutput(source.name, np.asarray(stamps, np.int64), poses_vo, corrected, states,
                     np.asarray(tracked), timings, reasons, num_keyframes=len(kf_pose), loops=loops,
                     wall_s=wall, ground_truth=source.ground_truth(),
                     keyframes={kid: (kf_stamp[kid], kf_pose[kid], kf_corr.get(kid, kf_pose[kid]))
                                for kid in sorted(kf_pose)},
                     extra=extra)


def _make_loop_closure(config=None):
    try:
        from mpslam_ros.slam.loop_closure import LoopClosure, LoopClosureConfig
    except ImportError as exc:
        logging.getLogger("mpslam_ros.vo").warning("loop closure unavailable (%s): odometry only", exc)
        return None
    return LoopClosure(config or LoopClosureConfig())


def finish_loop_closure(lc, timeout: float, progress: bool = True, out=None) -> dict:
    """Wait for ``lc``'s pending pose-graph solve, at most ``timeout`` seconds, saying so on ``out``
    (default stderr) when it is not instant; returns what the final map then includes.

    Without this wait a first run on an empty numba cache ended while the first solve was still
    compiling its kernels and reported the odometry as the "loop-closed" trajectory. Returned dict:
    ``included`` (every accepted loop is in the latest finished solve and no solve is pending),
    ``timed_out``, ``wait_s``, ``timeout_s`` and :meth:`LoopClosure.solve_state`'s counts. A progress
    line every :data:`LOOP_CLOSURE_WAIT_REPORT_S` s unless ``progress`` is False (start and end are
    always said).
    """
    import sys

    out = out or sys.stderr
    t0 = time.monotonic()
    state = lc.solve_state()
    timed_out = False
    if state["pending"]:
        print(f"loop closure: waiting for the pose-graph solve ({state['keyframes']} keyframes, "
              f"{state['loops']} loops; at most {timeout:g} s, --loop-closure-timeout) ...", file=out, flush=True)
        next_report = t0 + LOOP_CLOSURE_WAIT_REPORT_S
        while True:
            left = t0 + timeout - time.monotonic()
            if left <= 0:
                timed_out = lc.busy
                break
            if lc.wait_idle(timeout=min(left, 1.0)):
                break
            if progress and time.monotonic() >= next_report:
                next_report += LOOP_CLOSURE_WAIT_REPORT_S
                print(f"loop closure: still solving after {time.monotonic() - t0:.0f} s (the first solve on "
                      "an empty numba cache compiles the pose-graph kernels)", file=out, flush=True)
        wait = time.monotonic() - t0
        if timed_out:
            print(f"loop closure: the pose-graph solve did not finish within {timeout:g} s: the final trajectory "
                  "lacks its correction (see the report)", file=out, flush=True)
        else:
            print(f"loop closure: solve finished after {wait:.1f} s", file=out, flush=True)
    state = lc.solve_state()
    included = not state["pending"] and state["loops_solved"] >= state["loops"]
    return {"included": bool(included and state["loops"] > 0), "timed_out": timed_out,
            "wait_s": round(time.monotonic() - t0, 3), "timeout_s": timeout, **state}


def loop_closure_line(final: Optional[dict], enabled: bool) -> str:
    """One line of the report: whether the final trajectory includes loop closure, and why not."""
    if not enabled:
        return "final trajectory: odometry only (loop closure off)"
    if final is None:
        return "final trajectory: odometry only (loop closure unavailable)"
    if final["timed_out"]:
        return (f"final trajectory: INCOMPLETE, the last pose-graph solve did not finish within "
                f"{final['timeout_s']:g} s (--loop-closure-timeout); it holds {final['loops_solved']} of "
                f"{final['loops']} loops")
    if final["included"]:
        return (f"final trajectory: loop-closure corrected ({final['loops']} loops, {final['solves']} solves; "
                f"waited {final['wait_s']:.1f} s for the last)")
    if final["loops"] == 0:
        return "final trajectory: odometry (no loop closed)"
    return (f"final trajectory: {final['loops_solved']} of {final['loops']} loops solved "
            "(the latest solve failed; see the log)")


def timing_table(timings: List[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    """Per stage: median / p95 / max / mean milliseconds over all frames (0 where not run)."""
    out = {}
    for stage in STAGES:
        ms = np.array([t.get(stage, 0.0) for t in timings]) * 1e3
        if len(ms) == 0:
            continue
        out[stage] = {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
                      "max_ms": float(ms.max()), "mean_ms": float(ms.mean())}
    return out


def evaluate(run: RunOutput, poses: Optional[np.ndarray] = None) -> Optional[dict]:
    """ATE (SE(3)-aligned) and drift (RPE over 1 m segments, per metre) against ground truth."""
    gt = run.ground_truth
    if gt is None or int(run.has_pose.sum()) < 2:
        return None
    from mpslam_ros.datatypes import Trajectory
    from mpslam_ros.evaluation.metrics import associate, ate, rpe

    est = run.trajectory(run.poses if poses is None else poses)
    a = ate(gt, est, align="se3")
    out = {"ate_rmse_m": float(a.rmse), "ate_max_m": float(a.max),
           "frames_with_pose_percent": 100.0 * len(est) / max(1, len(run.stamps_ns))}
    # Also anchored at the first pose only (no fitting): how far the odometry wanders from truth.
    ref_m, est_m = associate(gt, est)
    anchor = ref_m.poses[0] @ np.linalg.inv(est_m.poses[0])
    start = ate(ref_m, Trajectory(est_m.stamps_ns, anchor @ est_m.poses), align="none")
    out["start_aligned_rmse_m"] = float(start.rmse)
    out["start_aligned_max_m"] = float(start.max)
    length = _path_length(gt)
    out["gt_path_length_m"] = length
    # Drift: RPE over pose pairs `seg` metres apart along the ground-truth path, per metre.
    for seg in DRIFT_SEGMENTS_M:
        if length < 1.5 * seg:
            continue
        r = rpe(gt, est, delta=seg, unit="m", all_pairs=True, pairs_from_reference=True)
        out[f"drift_{seg:g}m_trans_percent"] = 100.0 * r.rmse / seg
        out[f"drift_{seg:g}m_rot_deg_per_m"] = r.rot_rmse_deg / seg
    return out


def _path_length(traj) -> float:
    p = traj.positions
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()) if len(p) > 1 else 0.0


def format_report(run: RunOutput, metrics: Optional[dict], metrics_vo: Optional[dict],
                  table: Dict[str, Dict[str, float]], settings: dict) -> str:
    n = len(run.states)
    counts: Dict[str, int] = {}
    for s in run.states:
        counts[s] = counts.get(s, 0) + 1
    skipped = sum(1 for r in run.reasons if r) - sum(1 for s, r in zip(run.states, run.reasons) if r)
    lines = [f"mpslam run: {run.name}", "",
             "settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
             f"frames processed: {n} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}),"
             f" skipped inputs: {max(0, skipped)}",
             f"keyframes: {run.num_keyframes}, loops closed: {run.loops}",
             loop_closure_line(run.extra.get("loop_closure_final"), bool(settings.get("loop_closure"))),
             _events_line(run),
             f"wall time: {run.wall_s:.1f} s = {n / max(run.wall_s, 1e-9):.1f} frames/s", "",
             f"{'stage':12s} {'median ms':>10s} {'p95 ms':>10s} {'max ms':>10s} {'mean ms':>10s}"]
    for stage, row in table.items():
        lines.append(f"{stage:12s} {row['median_ms']:10.2f} {row['p95_ms']:10.2f} "
                     f"{row['max_ms']:10.2f} {row['mean_ms']:10.2f}")
    for title, m in (("odometry (VO)", metrics_vo), ("final (loop closure)", metrics)):
        if m is None:
            continue
        lines += ["", f"accuracy vs ground truth, {title}:"]
        lines += [f"  {k:24s} {v:.5g}" for k, v in m.items()]
    return "\n".join(lines) + "\n"


def _events_line(run: RunOutput) -> str:
    """One line on losses, relocalisations, maps and merges (what degraded and how it recovered)."""
    vo = run.extra.get("vo_events", {})
    text = (f"tracking losses: {vo.get('losses', 0)}, relocalised: {vo.get('relocalizations', 0)} "
            f"(max {vo.get('max_relocalization_offset_m', 0.0):.2f} m from the dead-reckoned pose), "
            f"relocalisations refused (look-alike places): {vo.get('relocalizations_refused', 0)}, "
            f"new maps: {vo.get('new_maps', 0)}, frames relocalising: {vo.get('frames_relocalizing', 0)} "
            f"({vo.get('relocalization_s', 0.0):.2f} s), longest gap bridged: "
            f"{vo.get('longest_bridged_gap_s', 0.0):.2f} s, poses refused by the motion gate: "
            f"{vo.get('poses_refused_by_motion_gate', 0)}, landmarks dropped on probation (moving points): "
            f"{vo.get('landmarks_dropped_on_probation', 0)}")
    lc = run.extra.get("loop_closure_events")
    if lc:
        text += (f"; loop closure: maps {lc['maps']}, merges {lc['merges']}, loops rejected "
                 f"{lc['rejected_loops']}, refused as look-alike places {lc.get('loops_implausible', 0)}, keyframes not aligned with the first map "
                 f"{run.extra.get('keyframes_not_aligned_with_first_map', 0)}")
    return text


def write_outputs(out_dir: Path, run: RunOutput, settings: dict, plots: bool = True) -> dict:
    """Write trajectories, timings CSV, report (txt + json) and plots; returns the report dict."""
    from mpslam_ros.datatypes import Trajectory
    from mpslam_ros.io.trajectory_io import write_tum

    out_dir.mkdir(parents=True, exist_ok=True)
    write_tum(out_dir / "trajectory.tum", run.trajectory(run.poses))
    write_tum(out_dir / "trajectory_vo.tum", run.trajectory(run.poses_vo))
    if run.keyframes:
        rows = list(run.keyframes.values())
        kf_stamps = np.array([r[0] for r in rows], np.int64)
        write_tum(out_dir / "keyframes_vo.tum", Trajectory(kf_stamps, np.array([r[1] for r in rows])))
        if settings.get("loop_closure"):
            write_tum(out_dir / "keyframes_corrected.tum", Trajectory(kf_stamps, np.array([r[2] for r in rows])))
    with open(out_dir / "timings.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "stamp_ns", "state", "num_tracked"] + [f"{s}_ms" for s in STAGES])
        for k, (st, state, ntr, tm) in enumerate(zip(run.stamps_ns, run.states, run.num_tracked,
                                                     run.timings)):
            w.writerow([k, int(st), state, int(ntr)] + [f"{tm.get(s, 0.0) * 1e3:.3f}" for s in STAGES])
    table = timing_table(run.timings)
    metrics_vo = evaluate(run, run.poses_vo)
    metrics = evaluate(run) if run.loops else None
    final = run.extra.get("loop_closure_final")
    if metrics is not None and final is not None:
        metrics["includes_loop_closure"] = float(final["included"])
    text = format_report(run, metrics, metrics_vo, table, settings)
    (out_dir / "report.txt").write_text(text)
    report = {"dataset": run.name, "settings": settings, "frames": len(run.states),
              "states": {s: run.states.count(s) for s in set(run.states)},
              "keyframes": run.num_keyframes, "loops": run.loops, "wall_s": run.wall_s,
              "frames_per_s": len(run.states) / max(run.wall_s, 1e-9), "timings": table,
              "metrics_vo": metrics_vo, "metrics": metrics, **run.extra}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    if plots and run.ground_truth is not None and len(run.stamps_ns) > 1:
        _plots(out_dir, run)
    return report | {"text": text}


def _plots(out_dir: Path, run: RunOutput) -> None:
    from mpslam_ros.datatypes import Trajectory
    from mpslam_ros.evaluation.metrics import ate
    from mpslam_ros.evaluation.plots import plot_errors, plot_trajectories

    ests = {"vo": run.trajectory(run.poses_vo)}
    if run.loops:
        ests["loop closure"] = run.trajectory(run.poses)
    plot_trajectories(out_dir / "trajectory.png", run.ground_truth, ests)
    plot_errors(out_dir / "errors.png", {name: ate(run.ground_truth, t, align="se3") for name, t in ests.items()})


def main(args: argparse.Namespace) -> int:
    from mpslam_ros.io.datasets import open_dataset
    from mpslam_ros.slam.vo import VOConfig

    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if _is_synthetic(args.dataset):
            source = open_synthetic(args.dataset, args.seed, args.profile, rgbd=args.rgbd,
                                    progress=not args.no_progress)
        else:
            source = open_dataset(args.dataset)
    except (OSError, ValueError) as exc:
        print(f"mpslam run: cannot open {args.dataset}: {exc}")
        return 2
    if args.breaks:
        from mpslam_ros.sim.breaks import BrokenSource, StreamBreak

        try:
            source = BrokenSource(source, [StreamBreak.parse(b) for b in args.breaks])
        except ValueError as exc:
            print(f"mpslam run: {exc}")
            return 2
    cfg = VOConfig(precision=args.precision, window_size=args.window, ba_enabled=not args.no_ba)
    if args.ba_iterations is not None:
        cfg.ba_iterations = args.ba_iterations
    run = run_pipeline(source, cfg, loop_closure=not args.no_loop_closure,
                       max_frames=args.max_frames, progress=not args.no_progress,
                       loop_closure_timeout=args.loop_closure_timeout)
    settings = {"precision": args.precision, "window": args.window, "ba": not args.no_ba,
                "loop_closure": not args.no_loop_closure}
    if _is_synthetic(args.dataset):
        settings.update(profile=args.profile, sensor="rgbd" if args.rgbd else "stereo")
    if args.breaks:
        settings["breaks"] = " ".join(args.breaks)
    report = write_outputs(Path(args.out), run, settings, plots=not args.no_plots)
    print(report["text"], end="")
    print(f"outputs in {args.out}/")
    return 0


def open_synthetic(spec: str, seed: int, profile: str = "clean", rgbd: bool = False, progress: bool = True):
    """A synthetic scene (``office:30``) with a camera-effect profile, as stereo or RGB-D."""
    from mpslam_ros.io.datasets import open_dataset
    from mpslam_ros.sim.sequences import RGBDView, SimOptions

    source = open_dataset(spec, seed=seed, options=SimOptions.for_profile(profile), progress=progress)
    return RGBDView(source, progress=progress) if rgbd else source


def _is_synthetic(spec: str) -> bool:
    """A synthetic scene name (``household:60``) rather than a path on disk."""
    return not Path(spec).exists() and "/" not in spec
