"""``mpslam synth``: render a synthetic stereo sequence and write it as a rosbag2 or EuRoC folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "render a synthetic stereo sequence (textured house, exact ground truth) to a rosbag2 or EuRoC folder"
DESCRIPTION = (
    "Render the built-in synthetic world (a textured 3 x 2 room house, an office floor with a ring "
    "corridor, or a warehouse of shelving aisles) along a robot or hand-held trajectory: 640x480 mono8 stereo at "
    "20 Hz, baseline 0.1 m, pixel noise (more camera effects with --profile), exact ground truth. Frames are cached (keyed by scene, duration, seed and options) so a second run is fast. "
    "OUT ending in .mcap gives one MCAP file; otherwise a bag folder (--storage) or, with --format "
    "euroc, an EuRoC ASL folder."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mpslam_ros.sim.profiles import PROFILE_HELP, profile_spec

    from mpslam_ros.sim.trajectories import SCENES

    parser.add_argument("-o", "--out", required=True,
                        help="output: FILE.mcap, a bag folder, or a folder for --format euroc")
    parser.add_argument("--scene", default="household", choices=sorted(SCENES),
                        help="trajectory: 'household' (robot driving loops through the rooms, camera 0.5 m "
                             "high), 'handheld' (6-DoF walk between two rooms), 'office' (robot lapping an "
                             "office floor's ring corridor, 52 m a lap, a look-alike corridor), 'office_handheld' "
                             "(a person walking those laps, camera in hand, 6-DoF) or 'warehouse' (robot through "
                             "aisles of racks with repeated bays and an open area, 66-74 m a lap); default household")
    parser.add_argument("--duration", type=float, default=60.0, help="length in seconds (default 60 = 1200 frames)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world (texture, furniture) and motion (default 0)")
    parser.add_argument("--format", choices=("bag", "euroc"), default="bag",
                        help="'bag' (rosbag2, default) or 'euroc' (ASL folder with PNGs, sensor.yaml, ground truth)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap",
                        help="rosbag2 storage for a bag folder (default mcap; a .mcap OUT is always mcap)")
    parser.add_argument("--depth", action="store_true", help="also write exact depth (/camera/depth/image_raw, 32FC1)")
    parser.add_argument("--profile", default="clean", type=profile_spec,
                        help="camera effects (default clean): " + PROFILE_HELP)
    parser.add_argument("--motion-blur", type=int, default=0, metavar="N",
                        help="average N extra sub-exposure renders per image (motion blur; default 0 = off)")
    parser.add_argument("--exposure-variation", type=float, default=0.0, metavar="A",
                        help="slow auto-exposure gain changes of relative amplitude A, e.g. 0.2 (default 0)")
    parser.add_argument("--supersample", type=int, default=1, metavar="S",
                        help="S x S samples per pixel: anti-aliased object edges at S^2 the render time (default 1)")
    parser.add_argument("--cache-dir", default=None,
                        help="frame cache folder (default $MPSLAM_CACHE or ~/.cache/mpslam_ros)")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")


def main(args: argparse.Namespace) -> int:
    import shutil

    from mpslam_ros.sim.sequences import SimOptions, load_or_generate

    out = Path(args.out)
    if out.exists():
        if not args.force:
            print(f"mpslam synth: {out} exists (use --force to overwrite)")
            return 2
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    if args.duration <= 0:
        print("mpslam synth: --duration must be positive")
        return 2
    overrides = {"supersample": args.supersample}
    if args.motion_blur:
        overrides["motion_blur_samples"] = args.motion_blur
    if args.exposure_variation:
        overrides["exposure_variation"] = args.exposure_variation
    opts = SimOptions.for_profile(args.profile, **overrides)
    t0 = time.perf_counter()
    seq = load_or_generate(args.scene, args.duration, args.seed, cache_dir=args.cache_dir, options=opts,
                           with_depth=args.depth)
    t1 = time.perf_counter()
    if args.format == "euroc":
        from mpslam_ros.io.euroc import write_euroc

        write_euroc(seq, out, progress=True)
    else:
        from mpslam_ros.io.bags import write_bag

        write_bag(seq, out, storage="mcap" if out.suffix == ".mcap" else args.storage, progress=True)
    t2 = time.perf_counter()
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) if out.is_dir() else out.stat().st_size
    print(f"{seq.name}: {len(seq)} stereo frames, {seq.rig.left.width}x{seq.rig.left.height}, "
          f"baseline {seq.rig.baseline:.3f} m")
    print(f"frames ready in {t1 - t0:.1f} s, written in {t2 - t1:.1f} s -> {out} ({size / 1e6:.1f} MB)")
    return 0
