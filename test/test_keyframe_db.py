"""Keyframe database: compact storage, memory bound, validation and map files."""

import numpy as np
import pytest

from mpslam_ros.slam.keyframe_db import KeyframeDatabase, MapFileError
from mpslam_ros.slam.loop_synth import make_keyframe_sequence


@pytest.fixture(scope="module")
def keyframes():
    return make_keyframe_sequence(seed=5, laps=1, keyframes_per_lap=30).keyframes


def test_features_with_landmarks_kept_first_and_memory_bounded(keyframes):
    db = KeyframeDatabase(max_features=200)
    for kf in keyframes:
        db.add(kf)
    rec = db.get(3)
    assert len(rec.keypoints) == 200
    has3d = np.isfinite(rec.points_cam).all(axis=1)
    assert has3d[: has3d.sum()].all()  # 3D features come first
    # 200 features x (8 px + 32 desc + 8 id + 12 point) + poses/K: about 12.5 KB per keyframe
    assert 200 * 60 <= db.bytes_per_keyframe <= 200 * 60 + 400
    assert rec.points_cam.dtype == np.float32 and rec.descriptors.dtype == np.uint8


def test_appearance_cap_drops_redundant_keyframes_but_keeps_poses(keyframes):
    db = KeyframeDatabase(max_appearance_keyframes=10)
    for kf in keyframes:
        db.add(kf)
    assert len(db) == len(keyframes)
    assert sum(r.has_appearance for r in db) == 10
    assert db.get(len(keyframes) - 1).has_appearance  # the newest is never dropped
    assert np.array_equal(db.odometry_poses(), np.array([kf.T_world_body for kf in keyframes]))


def test_bad_keyframes_are_rejected_with_their_id(keyframes):
    db = KeyframeDatabase()
    kf = keyframes[0]
    bad = type(kf)(**{**kf.__dict__, "id": 42, "descriptors": kf.descriptors[:-1]})
    with pytest.raises(ValueError, match="keyframe 42: descriptors"):
        db.add(bad)
    db.add(kf)
    with pytest.raises(ValueError, match="already"):
        db.add(kf)


def test_save_load_roundtrip_is_exact(keyframes, tmp_path):
    db = KeyframeDatabase(max_features=300)
    for kf in keyframes:
        db.add(kf)
    path = tmp_path / "kf.map"
    db.save(path, extra={"x": np.arange(3)}, meta={"note": "t"})
    db2, extra, meta = KeyframeDatabase.load(path)
    assert db2.ids() == db.ids() and meta == {"note": "t"} and np.array_equal(extra["x"], np.arange(3))
    for a, b in zip(db, db2):
        for name in ("T_world_body", "keypoints", "descriptors", "landmark_ids", "points_cam", "K", "T_body_left"):
            assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=name == "points_cam")


def test_inconsistent_map_file_names_the_problem(keyframes, tmp_path):
    db = KeyframeDatabase()
    for kf in keyframes[:3]:
        db.add(kf)
    path = tmp_path / "kf.npz"
    db.save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["descriptors"] = arrays["descriptors"][:-5]
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(MapFileError, match=r"kf\.npz: array 'descriptors' has shape"):
        KeyframeDatabase.load(path)
    with pytest.raises(MapFileError, match="not found"):
        KeyframeDatabase.load(tmp_path / "missing.npz")
