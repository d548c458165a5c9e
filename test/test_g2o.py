"""g2o reading/writing on the shared graphs, initial guesses, and clear errors for bad files."""

import numpy as np
import pytest

from mpslam_ros.geometry import lie
from mpslam_ros.io.g2o import G2OFormatError, initial_guess, read_g2o, write_g2o


def test_read_se3_matches_gtsam_reader(data_dir):
    gtsam = pytest.importorskip("gtsam")
    path = data_dir / "pgo" / "parking-garage.g2o"
    g = read_g2o(path)
    assert g.kind == "se3" and g.num_poses == 1661 and g.num_edges == 6275 and g.has_vertices
    fg, values = gtsam.readG2o(str(path), True)
    for k in (0, 100, 6274):
        f = fg.at(k)
        keys = f.keys()
        assert (g.ids[g.edge_i[k]], g.ids[g.edge_j[k]]) == (keys[0], keys[1])
        assert np.allclose(f.measured().matrix(), g.measurements[k], atol=1e-9)
        R = f.noiseModel().R()  # GTSAM's whitening: (rotation, translation) order
        assert np.allclose(R.T @ R, g.information[k], rtol=1e-9, atol=1e-9)
    assert np.allclose(values.atPose3(17).matrix(), g.poses[17], atol=1e-9)


def test_read_se2_matches_gtsam_reader(data_dir):
    gtsam = pytest.importorskip("gtsam")
    path = data_dir / "pgo" / "intel.g2o"
    g = read_g2o(path)
    assert g.kind == "se2" and g.poses.shape == (1728, 3, 3) and g.num_edges == 2512
    fg, values = gtsam.readG2o(str(path), False)
    f = fg.at(5)
    R = f.noiseModel().R()
    assert np.allclose(R.T @ R, g.information[5], rtol=1e-9)
    assert np.allclose(f.measured().matrix(), g.measurements[5], atol=1e-12)
    assert np.allclose(values.atPose2(1000).matrix(), g.poses[1000], atol=1e-12)


@pytest.mark.parametrize("name", ["smallGrid3D.g2o", "intel.g2o"])
def test_write_read_roundtrip(data_dir, tmp_path, name):
    g = read_g2o(data_dir / "pgo" / name)
    out = tmp_path / name
    write_g2o(out, g)
    h = read_g2o(out)
    assert h.kind == g.kind and np.array_equal(h.ids, g.ids)
    assert np.array_equal(h.edge_i, g.edge_i) and np.array_equal(h.edge_j, g.edge_j)
    assert np.allclose(h.poses, g.poses, atol=1e-12)
    assert np.allclose(h.measurements, g.measurements, atol=1e-12)
    assert np.allclose(h.information, g.information, rtol=1e-12)


def test_edges_only_file_gets_initial_guesses(data_dir):
    g = read_g2o(data_dir / "pgo" / "kitti_00.g2o")
    assert not g.has_vertices and g.kind == "se2"
    with pytest.raises(ValueError, match="no VERTEX lines"):
        initial_guess(g, "file")
    odo = initial_guess(g, "odometry")
    # the odometry chain reproduces every consecutive edge exactly
    k = np.flatnonzero(g.edge_j == g.edge_i + 1)[:50]
    for e in k:
        rel = lie.se2_inverse(odo[g.edge_i[e]]) @ odo[g.edge_j[e]]
        assert np.allclose(rel, g.measurements[e], atol=1e-9)
    ch = initial_guess(g, "chordal")
    assert ch.shape == odo.shape and np.allclose(ch[0], np.eye(3))
    for T in ch[::100]:
        assert np.allclose(T[:2, :2] @ T[:2, :2].T, np.eye(2), atol=1e-12)


def test_chordal_recovers_noise_free_graph():
    """On a consistent (noise-free) SE(3) graph with loops the chordal relaxation is exact."""
    rng = np.random.default_rng(0)
    n = 30
    poses = [np.eye(4)]
    for _ in range(n - 1):
        poses.append(poses[-1] @ lie.se3_exp(np.concatenate([0.3 * rng.standard_normal(3),
                                                              rng.standard_normal(3)])))
    poses = np.stack(poses)
    ei = np.concatenate([np.arange(n - 1), [0, 5, 10]])
    ej = np.concatenate([np.arange(1, n), [29, 20, 25]])
    from mpslam_ros.io.g2o import G2OGraph, chordal_initialization

    g = G2OGraph("se3", np.arange(n), poses, ei, ej,
                 np.stack([lie.se3_inverse(poses[i]) @ poses[j] for i, j in zip(ei, ej)]),
                 np.tile(np.eye(6), (len(ei), 1, 1)), has_vertices=False)
    assert np.allclose(chordal_initialization(g), poses, atol=1e-8)


BAD_FILES = [
    ("VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 1 0 0\nEDGE_SE2 0 1 1 0 0 1 0 0 1 0\n", 3, "needs 11 values"),
    ("VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 1 0 abc\n", 2, "non-numeric"),
    ("VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 nan 0 0\nEDGE_SE2 0 1 1 0 0 1 0 0 1 0 1\n", 2, "NaN"),
    ("VERTEX_SE2 0 0 0 0\nEDGE_SE2 0 7 1 0 0 1 0 0 1 0 1\n", 2, "vertex 7"),
    ("VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 1 0 0\nEDGE_SE2 0 1 1 0 0 -1 0 0 -1 0 -1\n", 3, "no positive eigenvalue"),
    ("VERTEX_SE3:QUAT 0 0 0 0 0 0 0 1\nVERTEX_SE2 1 0 0 0\n", 2, "mixes"),
    ("VERTEX_SE3:QUAT 0 0 0 0 0 0 0 0\n", 1, "zero quaternion"),
]


@pytest.mark.parametrize("text,line,msg", BAD_FILES)
def test_malformed_lines_name_file_and_line(tmp_path, text, line, msg):
    path = tmp_path / "bad.g2o"
    path.write_text(text)
    with pytest.raises(G2OFormatError) as err:
        read_g2o(path)
    assert f"bad.g2o:{line}:" in str(err.value) and msg in str(err.value)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.g2o"
    empty.write_text("# nothing\nVERTEX_SE2 0 0 0 0\n")
    with pytest.raises(G2OFormatError, match="empty pose graph"):
        read_g2o(empty)
    with pytest.raises(G2OFormatError, match="cannot read"):
        read_g2o(tmp_path / "missing.g2o")
