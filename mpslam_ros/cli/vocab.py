"""``mpslam vocab train IMAGES... -o FILE``: train a place-recognition vocabulary on your own images.

The default needs no file: loop closure grows an online vocabulary from the keyframes
(docs/places.md). A trained vocabulary (a k-majority tree, DBoW2 style) is for users who prefer a
fixed one trained on their environment; load it with the loop-closure parameter
``loop.vocabulary_path``. Images may be files or folders (every image inside, sorted).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "train a place-recognition vocabulary (oriented multi-scale ORB, k-majority tree) on images"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="vocab_command", metavar="ACTION", required=True)
    t = sub.add_parser("train", help="train a vocabulary tree on images and write it to FILE (.npz)")
    t.add_argument("images", nargs="+", help="image files or folders of images")
    t.add_argument("-o", "--out", required=True, help="output vocabulary file (.npz)")
    t.add_argument("--features", type=int, default=500, help="ORB features per image (default 500)")
    t.add_argument("--branching", type=int, default=10, help="children per tree node (default 10)")
    t.add_argument("--depth", type=int, default=4, help="tree levels: up to branching^depth words (default 4)")
    t.add_argument("--every", type=int, default=1, help="use every n-th image (default 1)")
    t.add_argument("--seed", type=int, default=0, help="seed of the k-majority clustering (default 0)")


def main(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np
    from tqdm import tqdm

    from mpslam_ros.bench.places import IMAGE_SUFFIXES
    from mpslam_ros.frontend.features import place_features
    from mpslam_ros.slam.place_recognition import train_vocabulary

    files = []
    for spec in args.images:
        p = Path(spec)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            files.append(p)
        else:
            print(f"error: {p}: no such file or folder", file=sys.stderr)
            return 2
    files = files[:: max(1, args.every)]
    if not files:
        print("error: no images found", file=sys.stderr)
        return 2
    descs, owners = [], []
    for i, f in enumerate(tqdm(files, desc="features", unit="img")):
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if img is None:
            print(f"error: {f}: not a readable image", file=sys.stderr)
            return 2
        d = place_features(img, args.features).descriptors
        descs.append(d)
        owners.append(np.full(len(d), i))
    desc = np.concatenate(descs)
    print(f"training a {args.branching} x {args.depth} tree on {len(desc)} descriptors of {len(files)} images")
    try:
        vocab = train_vocabulary(desc, args.branching, args.depth, np.concatenate(owners), args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    vocab.save(args.out)
    print(f"{vocab.num_words} words, {vocab.nbytes / 1e6:.2f} MB -> {args.out}")
    return 0
