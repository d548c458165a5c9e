"""``mpslam demo``: the whole ROS 2 graph over DDS on a synthetic (or given) bag, with a summary.

Generates (or reuses) the built-in synthetic stereo bag, starts ``vo_node``, ``loop_closure_node``
and ``bag_player`` as separate processes (their own ROS_DOMAIN_ID, discovery on localhost), records
the outputs from this process, then prints frames processed, rate, latency, dropped frames, loops
closed and the ATE with and without loop closure, and writes plots (PNG), trajectories (TUM) and
``summary.json`` to the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

#: Each node's /diagnostics status (its "ready" value: warm-up done, subscribed).
NODE_DIAGNOSTICS = (("vo_node", "vo_node: visual odometry"), ("loop_closure_node", "loop_closure_node: loop closure"))
#: After the bag, at most this long for loop_closure_node's last keyframes and solve (a warm solve
#: takes < 1 s; the nodes warm up before they subscribe, so minutes only if that failed).
LC_DRAIN_TIMEOUT_S = 120.0

HELP = "run the whole ROS 2 SLAM graph (nodes + bag player, over DDS) on a synthetic bag and report ATE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mpslam_ros.sim.profiles import PROFILE_HELP, profile_spec

    parser.add_argument("--scene", default="household",
                        help="synthetic scene to generate the bag from (default household)")
    parser.add_argument("--duration", type=float, default=40.0,
                        help="seconds of synthetic camera data (default 40; the run takes about as long "
                             "plus start-up)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic sequence (default 0)")
    parser.add_argument("--profile", default="clean", type=profile_spec,
                        help="camera effects of the synthetic sequence (default clean): " + PROFILE_HELP)
    parser.add_argument("--bag", default=None,
                        help="play this rosbag2 instead of the synthetic one (ATE needs /ground_truth/pose in it)")
    parser.add_argument("--cache-dir", default=None,
                        help="where generated sequences and bags are kept between runs "
                             "(default: the sequence cache of mpslam_ros.sim)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback rate factor (default 1 = real time)")
    parser.add_argument("--precision", choices=["fp64", "fp32", "fp16", "mixed"], default="mixed",
                        help="precision preset of both nodes' solvers (default mixed)")
    parser.add_argument("--window", type=int, default=None, help="BA window size in keyframes (default: config)")
    parser.add_argument("--no-loop-closure", action="store_true", help="run vo_node only")
    parser.add_argument("--params-file", default=None,
                        help="parameters YAML for the nodes (default: the packaged config/slam.yaml)")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID of the run (default: $ROS_DOMAIN_ID or a random one in 1..100)")
    parser.add_argument("--out", default="mpslam_demo", help="output folder (default ./mpslam_demo)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def prepare_bag(args: argparse.Namespace):
    """(bag path, StereoRig or None, ground-truth Trajectory or None, number of frames)."""
    from mpslam_ros.io.bags import BagSource, write_bag

    if args.bag:
        source = BagSource(args.bag)
        return Path(args.bag), source.rig, source.ground_truth(), len(source)
    from mpslam_ros.sim.sequences import SimOptions, cache_root, load_or_generate

    profile = getattr(args, "profile", "clean")
    print(f"synthetic sequence: {args.scene}, {args.duration:g} s, seed {args.seed}, {profile} camera ...", flush=True)
    seq = load_or_generate(args.scene, args.duration, args.seed, cache_dir=args.cache_dir,
                           options=SimOptions.for_profile(profile))
    # named by the sequence's cache key (renderer version + options), so a renderer change never replays an
    # old bag: a bag named by scene/duration/seed alone kept serving images of the first renderer
    bag = cache_root(args.cache_dir) / f"{seq.cache_key()}.mcap"
    if not bag.exists():
        bag.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing bag {bag} ...", flush=True)
        tmp = bag.with_suffix(".partial.mcap")
        write_bag(seq, tmp, storage="mcap")
        os.replace(tmp, bag)
    return bag, seq.rig, seq.ground_truth(), len(seq)


def run_graph(args: argparse.Namespace, bag: Path, rig, n_frames: int, out: Path) -> dict:
    """Start the nodes and the player, record the outputs; returns the raw observations."""
    from tqdm import tqdm

    from mpslam_ros.nodes.graph import DDS_ENV_KEYS, SlamGraph, extrinsic_params, ros_environment
    from mpslam_ros.warmup import is_warm

    env = ros_environment(args.domain_id)
    # this process subscribes too: same domain and discovery range before rclpy starts
    os.environ.update({k: env[k] for k in DDS_ENV_KEYS})
    from mpslam_ros.nodes.recorder import OutputRecorder

    params: dict = {"vo_node": {"precision": args.precision}, "loop_closure_node": {"precision": args.precision}}
    if args.window:
        params["vo_node"]["window_size"] = args.window
    if rig is not None:
        params["/**"] = extrinsic_params(rig.T_body_left)
    recorder = OutputRecorder(domain_id=int(env["ROS_DOMAIN_ID"]))
    graph = SlamGraph(out / "logs", env, params=params, params_file=args.params_file)
    # say "compiling" only where it is (no complete `mpslam warmup` of these sources): loading takes seconds
    warming_what = ("loading kernels" if is_warm([args.precision], ["stereo"])
                    else "compiling kernels on a cold cache, minutes")
    t_start = time.monotonic()
    try:
        graph.start_node("vo_node")
        if not args.no_loop_closure:
            graph.start_node("loop_closure_node")
        player = graph.start_player(bag, rate=args.rate)
        print(f"nodes started (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, logs in {out / 'logs'}); "
              "the player starts once they subscribe ...", flush=True)
        # a redirected stderr gets a line every few seconds instead of a redraw per frame
        with tqdm(total=n_frames, unit="frame", desc="odometry", file=sys.stderr,
                  mininterval=0.2 if sys.stderr.isatty() else 5.0) as bar:
            warming_shown = None
            while player.poll() is None:
                if not graph.alive("vo_node"):
                    raise RuntimeError("vo_node exited early:\n" + graph.log("vo_node")[-3000:])
                # the player waits for the nodes' warm-up: minutes on an empty numba cache, so say so
                warming = [name for name, diag in NODE_DIAGNOSTICS if name in graph.procs
                           and recorder.diagnostics(diag).get("ready") != "True"]
                if warming != warming_shown:
                    warming_shown = warming
                    bar.set_postfix_str(f"warming up ({warming_what}): {', '.join(warming)}"
                                        if warming else "")
                bar.update(recorder.count("vo/odometry") - bar.n)
                time.sleep(0.2)
            # let the last frames through VO and the keyframes through loop closure
            recorder.wait_for(lambda r: r.data.diagnostics.get("vo_node: visual odometry", {}).get(
                "frames_processed") and _vo_idle(r), timeout=10.0)
            bar.update(recorder.count("vo/odometry") - bar.n)
        if player.returncode != 0:
            raise RuntimeError("bag_player failed:\n" + graph.log("bag_player")[-3000:])
        t_play_end = time.monotonic()
        lc_finished = None
        if not args.no_loop_closure:
            n_kf = recorder.count("vo/keyframes/features")
            print(f"waiting for loop_closure_node: {n_kf} keyframes and the last pose-graph solve "
                  f"(at most {LC_DRAIN_TIMEOUT_S:g} s) ...", file=sys.stderr, flush=True)
            lc_finished = recorder.wait_for(lambda r: _lc_done(r, n_kf), timeout=LC_DRAIN_TIMEOUT_S)
            if not lc_finished:
                print(f"loop_closure_node had not finished after {LC_DRAIN_TIMEOUT_S:g} s: the corrected "
                      "keyframes below lack its latest work", file=sys.stderr, flush=True)
        time.sleep(1.5)  # one more diagnostics / corrected-path period
        codes = graph.stop_all()
    finally:
        graph.stop_all()
        recorder.close()
    return {"recorder": recorder, "codes": codes, "wall_s": t_play_end - t_start, "graph": graph, "t_start": t_start,
            "loop_closure_finished": lc_finished}


def _num(value):
    return None if value in (None, "") else float(value)


def _vo_idle(rec) -> bool:
    vo = rec.data.diagnostics.get("vo_node: visual odometry", {})
    return int(vo.get("frames_processed", 0)) + int(vo.get("frames_dropped", 0)) >= int(vo.get("frames_received", 1)) - 1


def _lc_done(rec, n_keyframes: int) -> bool:
    lc = rec.data.diagnostics.get("loop_closure_node: loop closure", {})
    return (int(lc.get("keyframes_processed", -1)) >= n_keyframes and int(lc.get("keyframes_queued", 1)) == 0
            and int(lc.get("pose_graph_pending", 1)) == 0)


def summarize(args, result: dict, gt, n_frames: int, out: Path) -> dict:
    import numpy as np

    rec = result["recorder"]
    vo_diag = rec.data.diagnostics.get("vo_node: visual odometry", {})
    lc_diag = rec.data.diagnostics.get("loop_closure_node: loop closure", {})
    odo = rec.odometry_trajectory()
    corrected = rec.path_trajectory(corrected=True)
    lat = rec.latencies()
    with rec._lock:
        first_camera = min(rec.data.camera_arrival.values(), default=None)
        # the first frame seen both ways, by stamp (this recorder's camera subscription may match the
        # player after VO's: the earliest arrivals can belong to different frames)
        odom_arrival = {int(st): t for st, _, t in rec.data.odometry}
        common = sorted(set(odom_arrival) & {int(st) for st in rec.data.camera_arrival})
        first_odometry = odom_arrival[common[0]] if common else None
        first_camera_of_it = rec.data.camera_arrival[common[0]] if common else None
    summary = {
        "bag_frames": n_frames,
        "frames_received": int(vo_diag.get("frames_received", 0)),
        "frames_processed": int(vo_diag.get("frames_processed", 0)),
        "odometry_messages": len(odo),
        "frames_dropped_vo_busy": int(vo_diag.get("frames_dropped", 0)),
        "frames_missed_transport": int(vo_diag.get("frames_missed", 0)),
        "bad_messages": int(vo_diag.get("bad_messages", 0)),
        "vo_rate_hz": float(vo_diag.get("rate_hz", 0.0)),
        "vo_time_per_frame_ms": float(vo_diag.get("time_total_ms", 0.0)),
        # mean time of each VO stage over the last frames (BA: per keyframe, where it runs)
        "vo_stage_ms": {k[len("time_"):-len("_ms")]: float(v) for k, v in vo_diag.items()
                        if k.startswith("time_") and k.endswith("_ms") and k != "time_total_ms"},
        "latency_mean_ms": 1e3 * float(np.mean(lat)) if len(lat) else None,
        "latency_p95_ms": 1e3 * float(np.percentile(lat, 95)) if len(lat) else None,
        "latency_max_ms": 1e3 * float(np.max(lat)) if len(lat) else None,
        # the cold-start figure (issue 13): first camera frame published -> its odometry received
        "first_frame_latency_ms": (1e3 * (first_odometry - first_camera_of_it)
                                   if first_odometry is not None else None),
        # nodes started -> first camera frame: the nodes' warm-up (the player waits until both are ready)
        "startup_s": first_camera - result["t_start"] if first_camera is not None and "t_start" in result else None,
        "vo_warmup_s": _num(vo_diag.get("warmup_s")),
        "loop_closure_warmup_s": _num(lc_diag.get("warmup_s")),
        # numba kernels compiled or loaded from the disk cache after the nodes reported ready (should be 0)
        "kernels_after_ready": {name: int(d["kernel_signatures_loaded_after_ready"])
                                for name, d in (("vo_node", vo_diag), ("loop_closure_node", lc_diag))
                                if d and "kernel_signatures_loaded_after_ready" in d},
        "keyframes": rec.count("vo/keyframes/features"),
        "loops_closed": int(lc_diag.get("loops", 0)) if lc_diag else None,
        # every keyframe through loop closure and the last solve finished before the nodes stopped
        "loop_closure_finished": result.get("loop_closure_finished"),
        "precision": args.precision,
        "exit_codes": result["codes"],
    }
    if gt is not None and len(odo) > 2:
        from mpslam_ros.evaluation.metrics import ate

        summary["ate_vo_m"] = float(ate(gt, odo, align="se3").rmse)
        if corrected is not None and len(corrected) > 2:
            kf_stamps = corrected.stamps_ns
            idx = np.searchsorted(odo.stamps_ns, kf_stamps)
            ok = (idx < len(odo)) & (odo.stamps_ns[np.minimum(idx, len(odo) - 1)] == kf_stamps)
            from mpslam_ros.datatypes import Trajectory

            odo_kf = Trajectory(kf_stamps[ok], odo.poses[idx[ok]])
            summary["ate_vo_keyframes_m"] = float(ate(gt, odo_kf, align="se3").rmse)
            summary["ate_loop_closure_keyframes_m"] = float(ate(gt, corrected, align="se3").rmse)
    from mpslam_ros.io.trajectory_io import write_tum

    write_tum(out / "vo_odometry.tum", odo)
    if corrected is not None:
        write_tum(out / "loop_closure_keyframes.tum", corrected)
    if not args.no_plots and gt is not None and len(odo) > 2:
        from mpslam_ros.evaluation.metrics import ate
        from mpslam_ros.evaluation.plots import plot_errors, plot_trajectories

        ests = {"VO odometry": odo}
        if corrected is not None and len(corrected) > 2:
            ests["loop closure (keyframes)"] = corrected
        plot_trajectories(out / "trajectory.png", gt, ests, title=f"mpslam demo: {args.scene} (top view)")
        plot_errors(out / "errors.png", {name: ate(gt, est, align="se3") for name, est in ests.items()},
                    title="position error after SE(3) alignment")
        summary["plots"] = [str(out / "trajectory.png"), str(out / "errors.png")]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def print_summary(s: dict) -> None:
    def fmt(v, unit=""):
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:.1f}{unit}" if unit.strip() in ("ms", "s") else f"{v:.4f}{unit}"
        return f"{v}{unit}"

    rows = [
        ("frames in bag", fmt(s["bag_frames"])),
        ("frames processed by VO", fmt(s["frames_processed"])),
        ("  dropped (VO busy)", fmt(s["frames_dropped_vo_busy"])),
        ("  missed (never arrived)", fmt(s["frames_missed_transport"])),
        ("VO rate", f"{s['vo_rate_hz']:.1f} Hz"),
        ("VO time per frame", f"{s['vo_time_per_frame_ms']:.1f} ms"),
        ("  bundle adjustment per keyframe", fmt(s["vo_stage_ms"].get("ba"), " ms")),
        ("latency camera -> odometry", f"mean {fmt(s['latency_mean_ms'], ' ms')}, p95 {fmt(s['latency_p95_ms'], ' ms')}, "
         f"max {fmt(s.get('latency_max_ms'), ' ms')}"),
        ("  first frame", fmt(s.get("first_frame_latency_ms"), " ms")),
        ("start-up (warm-up) until the first frame", fmt(s.get("startup_s"), " s")),
        ("  warm-up VO / loop closure", f"{fmt(s.get('vo_warmup_s'), ' s')} / {fmt(s.get('loop_closure_warmup_s'), ' s')}"),
        ("kernels compiled/loaded after ready", fmt(sum(s["kernels_after_ready"].values())
                                                    if s.get("kernels_after_ready") else None)),
        ("keyframes", fmt(s["keyframes"])),
        ("loops closed", fmt(s["loops_closed"])),
        ("loop closure finished (all keyframes, last solve)",
         {True: "yes", False: "NO (timed out: corrected keyframes incomplete)", None: "n/a"}[s.get("loop_closure_finished")]),
        ("ATE VO, all frames", fmt(s.get("ate_vo_m"), " m")),
        ("ATE VO, keyframes", fmt(s.get("ate_vo_keyframes_m"), " m")),
        ("ATE with loop closure, keyframes", fmt(s.get("ate_loop_closure_keyframes_m"), " m")),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nmpslam demo ({s['precision']} precision)")
    print("-" * (width + 30))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print("-" * (width + 30))


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(args: argparse.Namespace) -> int:
    # SIGTERM unwinds like Ctrl-C, so the node processes are stopped (never left running)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bag, rig, gt, n_frames = prepare_bag(args)
    try:
        result = run_graph(args, bag, rig, n_frames, out)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = summarize(args, result, gt, n_frames, out)
    print_summary(summary)
    print(f"\nwrote {out / 'summary.json'}" + (f", {', '.join(summary['plots'])}" if summary.get("plots") else ""))
    bad = {k: v for k, v in summary["exit_codes"].items() if v not in (0, None)}
    if bad:
        print(f"warning: processes exited with errors: {bad} (see {out / 'logs'})", file=sys.stderr)
        return 1
    return 0
