"""Non-positive-definite information blocks (issue 17): projected and warned by default, refused
when strict, and the graph still solves to the same optimum as with an explicitly PD matrix."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from mpslam_ros.io.g2o import G2OFormatError, read_g2o, write_g2o
from mpslam_ros.io.information import REL_FLOOR, make_positive_definite


def _cubicle_like(info: np.ndarray) -> np.ndarray:
    """A rotation block (GTSAM order: rows 0..2) with off-diagonals far above its diagonal, as in
    SE-Sync's cubicle graph: indefinite (eigenvalues of the block: -19, -19, 41)."""
    out = info.copy()
    out[:3, :3] = np.array([[1.0, 20.0, 20.0], [20.0, 1.0, 20.0], [20.0, 20.0, 1.0]])
    return out


@pytest.fixture
def crafted(data_dir, tmp_path):
    """tinyGrid3D with edges 3 and 7 given indefinite rotation information, and edge 5 a singular one."""
    g = read_g2o(data_dir / "pgo" / "smallGrid3D.g2o")
    g.information = g.information.copy()
    for k in (3, 7):
        g.information[k] = _cubicle_like(g.information[k])
    g.information[5][5, :] = g.information[5][:, 5] = 0.0  # an unobserved direction: PSD, singular
    path = tmp_path / "cubicle_like.g2o"
    write_g2o(path, g)
    return path, g


def test_projection_is_nearest_pd_and_leaves_good_blocks_alone():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(6, 6))
    good = A @ A.T + np.eye(6)
    bad = _cubicle_like(np.eye(6) * 100.0)
    chk = make_positive_definite(np.stack([good, bad]))
    assert list(chk.projected) == [1] and len(chk.unusable) == 0
    assert np.array_equal(chk.information[0], good)  # untouched, bit for bit
    P = chk.information[1]
    w = np.linalg.eigvalsh(P)
    assert w.min() > 0 and w.min() == pytest.approx(2 * REL_FLOOR * w.max(), rel=1e-6)
    np.linalg.cholesky(P)
    # Higham: clipping the eigenvalues is the Frobenius-nearest PSD matrix: no random PD matrix is closer
    d = np.linalg.norm(P - bad)
    for _ in range(200):
        B = rng.normal(size=(6, 6))
        Q = P + 0.05 * (B + B.T)
        if np.linalg.eigvalsh(Q).min() > 0:
            assert np.linalg.norm(Q - bad) >= d - 1e-9
    # eigenvalues that were positive are kept exactly (the block's "good" directions keep their weight)
    wb = np.linalg.eigvalsh(bad)
    assert np.count_nonzero(wb < 0) == 2  # the crafted block really is indefinite (-19, -19, 41, ...)
    assert np.allclose(w[2:], wb[2:], rtol=1e-12) and np.allclose(w[:2], 2 * REL_FLOOR * wb[-1], rtol=1e-6)


def test_reader_projects_counts_and_warns(crafted, caplog):
    path, g = crafted
    with caplog.at_level(logging.WARNING, logger="mpslam_ros.io.g2o"):
        h = read_g2o(path)
    assert list(h.projected_edges) == [3, 5, 7]
    msg = " ".join(r.getMessage() for r in caplog.records)
    line = int(h.edge_lines[3])
    assert f"cubicle_like.g2o:{line}: information matrix is not positive definite" in msg
    assert "3 of" in msg and "projected to the nearest positive-definite" in msg
    for k in range(h.num_edges):
        np.linalg.cholesky(h.information[k])
        if k not in (3, 5, 7):
            assert np.allclose(h.information[k], g.information[k], rtol=1e-15)


def test_strict_refuses_with_the_edge_line(crafted):
    path, _ = crafted
    with pytest.raises(G2OFormatError) as err:
        read_g2o(path, info_policy="strict")
    line = int(read_g2o(path).edge_lines[3])
    assert f"cubicle_like.g2o:{line}: information matrix is not positive definite" in str(err.value)
    assert "3 such edge(s)" in str(err.value)
    with pytest.raises(ValueError, match="unknown info_policy"):
        read_g2o(path, info_policy="lenient")


def test_projected_graph_solves_like_the_explicit_projection(crafted, tmp_path):
    """The solver sees exactly the projected matrices: same optimum as a file holding them explicitly."""
    from mpslam_ros.problems.pgo import PoseGraphProblem, pgo_options
    from mpslam_ros.solvers.lm import SolverOptions, solve

    path, _ = crafted
    h = read_g2o(path)
    explicit = tmp_path / "explicit.g2o"
    write_g2o(explicit, h)
    e = read_g2o(explicit, info_policy="strict")  # already PD: strict accepts it
    costs = []
    for graph in (h, e):
        p = PoseGraphProblem(graph.kind, graph.poses.copy(), graph.edge_i, graph.edge_j, graph.measurements,
                             graph.information, fixed=np.array([0]))
        s = solve(p, pgo_options(SolverOptions(precision="fp64", linear_solver="cholesky")))
        costs.append(s.final_cost)
    assert np.isfinite(costs[0]) and costs[0] == pytest.approx(costs[1], rel=1e-9)


def test_cli_pgo_reports_projection_and_strict_flag(crafted):
    path, _ = crafted
    run = [sys.executable, "-m", "mpslam_ros", "pgo", str(path), "--max-iterations", "5"]
    ok = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "information: 3 non-positive-definite matrices projected" in ok.stdout
    strict = subprocess.run(run + ["--strict-information"], capture_output=True, text=True, timeout=300)
    assert strict.returncode == 2 and "cubicle_like.g2o:" in strict.stderr
    assert "not positive definite" in strict.stderr
