"""g2o pose-graph files: VERTEX_SE3:QUAT / EDGE_SE3:QUAT and VERTEX_SE2 / EDGE_SE2.

Line formats (g2o):

- ``VERTEX_SE3:QUAT id x y z qx qy qz qw``
- ``EDGE_SE3:QUAT i j x y z qx qy qz qw`` + the 21 upper-triangular entries of the 6x6 information
  matrix in g2o's order (x, y, z, rx, ry, rz): translation first;
- ``VERTEX_SE2 id x y theta``, ``EDGE_SE2 i j x y theta`` + 6 upper-triangular entries (x, y, theta);
- ``FIX id`` marks a vertex held constant; other tags are ignored.

In memory everything follows GTSAM (:mod:`mpslam_ros.geometry.lie`): SE(3) information matrices are
permuted to (rotation, translation) order (as ``gtsam.readG2o`` does; no other rescaling), SE(2) stays
(x, y, theta). Poses are 4x4 (SE(3)) or 3x3 (SE(2)) float64 matrices, ``T_world_vertex``; an edge
measures ``T_i^-1 T_j``.

Information blocks that are not positive definite (singular, indefinite, or conditioned beyond
1e10) are handled by :mod:`mpslam_ros.io.information`: projected to the nearest positive-definite
matrix, counted in ``G2OGraph.projected_edges`` and warned once per file (default), or refused with
the edge's line number (``info_policy="strict"``).

Files with edges only (e.g. kitti_00) get an initial guess from :func:`initial_guess`: the odometry
chain (composing edges i -> i+1) or a chordal relaxation (rotations by linear least squares on the
matrix entries, projected to SO(n), then translations by linear least squares).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from mpslam_ros.geometry import lie
from mpslam_ros.io.information import INFO_POLICIES, REL_FLOOR, make_positive_definite

log = logging.getLogger("mpslam_ros.io.g2o")

PathLike = Union[str, Path]

#: Permutation between g2o's (translation, rotation) and GTSAM's (rotation, translation) SE(3) order.
_G2O_TO_GTSAM = np.array([3, 4, 5, 0, 1, 2])


class G2OFormatError(ValueError):
    """A malformed g2o file; the message names the file and the line number."""


@dataclass
class G2OGraph:
    """A pose graph read from a g2o file (indices into ``ids``; poses ``T_world_vertex``)."""

    kind: str  # "se3" or "se2"
    ids: np.ndarray  # int64[n] vertex ids as in the file, sorted
    poses: np.ndarray  # float64[n,4,4] or [n,3,3]; identity where the file had no vertex
    edge_i: np.ndarray  # int64[E] index (into ids) of the first vertex
    edge_j: np.ndarray  # int64[E]
    measurements: np.ndarray  # float64[E,4,4] or [E,3,3]: measured T_i^-1 T_j
    information: np.ndarray  # float64[E,6,6] (rot, trans) or [E,3,3] (x, y, theta)
    has_vertices: bool = True
    fixed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # indices of FIX vertices
    path: str = ""
    #: edges whose information block was projected to the nearest positive-definite matrix
    projected_edges: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: the file's line number of each edge
    edge_lines: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def dim(self) -> int:
        return 6 if self.kind == "se3" else 3

    @property
    def num_poses(self) -> int:
        return len(self.ids)

    @property
    def num_edges(self) -> int:
        return len(self.edge_i)


def _upper_to_full(vals: List[float], n: int) -> np.ndarray:
    M = np.zeros((n, n))
    M[np.triu_indices(n)] = vals
    return M + np.triu(M, 1).T


def read_g2o(path: PathLike, info_policy: str = "project") -> G2OGraph:
    """Parse a g2o file. Raises :class:`G2OFormatError` (file:line: reason) on malformed input.

    ``info_policy``: "project" (default) replaces information blocks that are not positive definite
    by the nearest positive-definite matrix, with one warning per file and the edges listed in
    ``projected_edges``; "strict" refuses them (see :mod:`mpslam_ros.io.information`).
    """
    if info_policy not in INFO_POLICIES:
        raise ValueError(f"unknown info_policy {info_policy!r}; choose from {INFO_POLICIES}")
    path = Path(path)
    vertices = {}
    edges = []
    fixed_ids = []
    kinds = set()
    try:
        text = path.read_text()
    except OSError as exc:
        raise G2OFormatError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        tag = parts[0]

        def err(msg: str) -> G2OFormatError:
            return G2OFormatError(f"{path}:{lineno}: {msg} in line {line.strip()[:80]!r}")

        def nums(expected: int) -> List[float]:
            if len(parts) - 1 != expected:
                raise err(f"{tag} needs {expected} values, found {len(parts) - 1}")
            try:
                vals = [float(x) for x in parts[1:]]
            except ValueError:
                raise err("non-numeric value") from None
            if not np.all(np.isfinite(vals)):
                raise err("NaN or infinite value")
            return vals

        def vid(x: float) -> int:
            if x != int(x) or x < 0:
                raise err(f"vertex id {x} is not a non-negative integer")
            return int(x)

        if tag == "VERTEX_SE3:QUAT":
            v = nums(8)
            kinds.add("se3")
            T = np.eye(4)
            q = np.array(v[4:8])
            if np.linalg.norm(q) < 1e-9:
                raise err("zero quaternion")
            T[:3, :3] = lie.quat_to_rot(*q)
            T[:3, 3] = v[1:4]
            vertices[vid(v[0])] = T
        elif tag == "VERTEX_SE2":
            v = nums(4)
            kinds.add("se2")
            vertices[vid(v[0])] = lie.se2_from_xytheta(v[1], v[2], v[3])
        elif tag == "EDGE_SE3:QUAT":
            v = nums(2 + 7 + 21)
            kinds.add("se3")
            q = np.array(v[5:9])
            if np.linalg.norm(q) < 1e-9:
                raise err("zero quaternion")
            Z = np.eye(4)
            Z[:3, :3] = lie.quat_to_rot(*q)
            Z[:3, 3] = v[2:5]
            info = _upper_to_full(v[9:], 6)[np.ix_(_G2O_TO_GTSAM, _G2O_TO_GTSAM)]
            edges.append((vid(v[0]), vid(v[1]), Z, info, lineno))
        elif tag == "EDGE_SE2":
            v = nums(2 + 3 + 6)
            kinds.add("se2")
            Z = lie.se2_from_xytheta(v[2], v[3], v[4])
            edges.append((vid(v[0]), vid(v[1]), Z, _upper_to_full(v[5:], 3), lineno))
        elif tag == "FIX":
            fixed_ids.extend(vid(float(x)) for x in parts[1:])
        else:
            continue  # other g2o tags (parameters, landmarks) are not pose-graph data
        if len(kinds) > 1:
            raise err("mixes SE(2) and SE(3) elements")
    if not edges:
        raise G2OFormatError(f"{path}: no EDGE_SE3:QUAT or EDGE_SE2 lines (empty pose graph)")
    kind = kinds.pop()
    for i, j, _, info, lineno in edges:
        if i == j:
            raise G2OFormatError(f"{path}:{lineno}: edge connects vertex {i} to itself")
    lines = np.array([e[4] for e in edges], dtype=np.int64)
    check = make_positive_definite(np.stack([e[3] for e in edges]))
    if len(check.unusable):
        k = int(check.unusable[0])
        raise G2OFormatError(f"{path}:{lines[k]}: information matrix has no positive eigenvalue "
                             f"(largest {check.max_eig[k]:.3g}): no weight to give this edge")
    if len(check.projected):
        k = int(check.projected[0])
        where = (f"{path}:{lines[k]}: information matrix is not positive definite (eigenvalues "
                 f"{check.min_eig[k]:.3g} .. {check.max_eig[k]:.3g})")
        if info_policy == "strict":
            raise G2OFormatError(where + f"; {len(check.projected)} such edge(s) in the file")
        log.warning("%s; %d of %d information matrices projected to the nearest positive-definite matrix "
                    "(eigenvalues clipped at %g x the largest)", where, len(check.projected), len(edges), 2 * REL_FLOOR)
    edge_ids = {i for e in edges for i in e[:2]}
    if vertices:
        missing = sorted(edge_ids - set(vertices))
        if missing:
            lineno = next(e[4] for e in edges if e[0] == missing[0] or e[1] == missing[0])
            raise G2OFormatError(f"{path}:{lineno}: edge refers to vertex {missing[0]} with no VERTEX line")
    ids = np.array(sorted(set(vertices) | edge_ids), dtype=np.int64)
    index = {int(v): k for k, v in enumerate(ids)}
    eye = np.eye(3 if kind == "se2" else 4)
    poses = np.stack([vertices.get(int(v), eye) for v in ids]).astype(np.float64)
    return G2OGraph(
        kind=kind,
        ids=ids,
        poses=poses,
        edge_i=np.array([index[e[0]] for e in edges], dtype=np.int64),
        edge_j=np.array([index[e[1]] for e in edges], dtype=np.int64),
        measurements=np.stack([e[2] for e in edges]),
        information=check.information,
        has_vertices=bool(vertices),
        fixed=np.array(sorted(index[f] for f in fixed_ids if f in index), dtype=np.int64),
        path=str(path),
        projected_edges=check.projected,
        edge_lines=lines,
    )


def _fmt(x: float) -> str:
    return f"{x:.17g}"


def write_g2o(path: PathLike, graph: G2OGraph, poses: Optional[np.ndarray] = None) -> None:
    """Write ``graph`` (with ``poses`` instead of ``graph.poses`` if given) in g2o format."""
    poses = graph.poses if poses is None else poses
    lines = []
    inv = np.argsort(_G2O_TO_GTSAM)
    if graph.kind == "se3":
        for vid, T in zip(graph.ids, poses):
            q = lie.rot_to_quat(np.ascontiguousarray(T[:3, :3]))
            lines.append(" ".join(["VERTEX_SE3:QUAT", str(vid)] + [_fmt(x) for x in (*T[:3, 3], *q)]))
        for i, j, Z, info in zip(graph.edge_i, graph.edge_j, graph.measurements, graph.information):
            q = lie.rot_to_quat(np.ascontiguousarray(Z[:3, :3]))
            g2o_info = info[np.ix_(inv, inv)][np.triu_indices(6)]
            lines.append(" ".join(["EDGE_SE3:QUAT", str(graph.ids[i]), str(graph.ids[j])]
                                  + [_fmt(x) for x in (*Z[:3, 3], *q, *g2o_info)]))
    else:
        for vid, T in zip(graph.ids, poses):
            lines.append(" ".join(["VERTEX_SE2", str(vid)] + [_fmt(x) for x in lie.se2_to_xytheta(T)]))
        for i, j, Z, info in zip(graph.edge_i, graph.edge_j, graph.measurements, graph.information):
            lines.append(" ".join(["EDGE_SE2", str(graph.ids[i]), str(graph.ids[j])]
                                  + [_fmt(x) for x in (*lie.se2_to_xytheta(Z), *info[np.triu_indices(3)])]))
    if len(graph.fixed):
        lines.append("FIX " + " ".join(str(graph.ids[f]) for f in graph.fixed))
    Path(path).write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- initial guesses


def initial_guess(graph: G2OGraph, method: str = "file") -> np.ndarray:
    """Initial poses: "file" (the VERTEX lines), "odometry" (compose edges i -> i+1) or "chordal"."""
    if method == "file":
        if not graph.has_vertices:
            raise ValueError(f"{graph.path}: the file has no VERTEX lines; use --init odometry or chordal")
        return graph.poses.copy()
    if method == "odometry":
        return odometry_initialization(graph)
    if method == "chordal":
        return chordal_initialization(graph)
    raise ValueError(f"unknown initialisation {method!r}; choose file, odometry or chordal")


def odometry_initialization(graph: G2OGraph) -> np.ndarray:
    """Chain the edges i -> i+1 from the first pose at the identity (spanning tree for gaps)."""
    n = graph.num_poses
    d = graph.poses.shape[1]
    poses = np.zeros((n, d, d))
    known = np.zeros(n, dtype=bool)
    poses[0] = np.eye(d)
    known[0] = True
    inv = lie.se3_inverse if graph.kind == "se3" else lie.se2_inverse
    # prefer consecutive (odometry) edges, then any edge, breadth-first from pose 0
    order = np.argsort(np.abs(graph.edge_j - graph.edge_i) != 1, kind="stable")
    changed = True
    while changed and not known.all():
        changed = False
        for k in order:
            i, j = graph.edge_i[k], graph.edge_j[k]
            if known[i] and not known[j]:
                poses[j] = poses[i] @ graph.measurements[k]
                known[j] = changed = True
            elif known[j] and not known[i]:
                poses[i] = poses[j] @ inv(graph.measurements[k])
                known[i] = changed = True
    if not known.all():
        raise ValueError(f"{graph.path}: pose graph is disconnected ({int((~known).sum())} poses unreachable)")
    return poses


def _project_to_so(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    D = np.ones(M.shape[-1])
    D[-1] = np.sign(np.linalg.det(U @ Vt))
    return (U * D) @ Vt


def chordal_initialization(graph: G2OGraph) -> np.ndarray:
    """Chordal relaxation (Carlone et al. 2015): rotations first, then translations, anchored at pose 0."""
    n, E = graph.num_poses, graph.num_edges
    k = 3 if graph.kind == "se3" else 2
    i, j = graph.edge_i, graph.edge_j
    Rz = graph.measurements[:, :k, :k]
    # R_j = R_i R_ij, row by row: R_ij^T r_i - r_j = 0 for each row r of the rotations (rows decouple).
    # Unknowns: rows of R_1..R_{n-1} (R_0 = I is the anchor).
    rows, cols, vals = [], [], []
    eq = np.arange(E)[:, None] * k + np.arange(k)[None, :]  # [E, k] equation indices
    for a in range(k):
        for b in range(k):
            rows.append(eq[:, a])
            cols.append(i * k + b)
            vals.append(Rz[:, b, a])  # (R_ij^T)[a, b]
    rows.append(eq.ravel())
    cols.append((j[:, None] * k + np.arange(k)[None, :]).ravel())
    vals.append(-np.ones(E * k))
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(E * k, n * k))
    free = slice(k, n * k)
    A_free, A_anchor = A[:, free], A[:, :k]
    N = (A_free.T @ A_free).tocsc()
    lu = spla.splu(N + sp.identity(N.shape[0], format="csc") * 1e-10)
    R = np.zeros((n, k, k))
    R[0] = np.eye(k)
    for r in range(k):
        rhs = -(A_anchor @ np.eye(k)[r])
        R[1:, r, :] = lu.solve(A_free.T @ rhs).reshape(n - 1, k)
    R[1:] = np.stack([_project_to_so(M) for M in R[1:]])
    # translations: t_j - t_i = R_i t_ij
    tz = graph.measurements[:, :k, k]
    b = np.einsum("eab,eb->ea", R[i], tz).ravel()
    rows = np.concatenate([eq.ravel(), eq.ravel()])
    cols = np.concatenate([(j[:, None] * k + np.arange(k)).ravel(), (i[:, None] * k + np.arange(k)).ravel()])
    vals = np.concatenate([np.ones(E * k), -np.ones(E * k)])
    A = sp.csr_matrix((vals, (rows, cols)), shape=(E * k, n * k))[:, free]
    N = (A.T @ A).tocsc()
    t = spla.splu(N + sp.identity(N.shape[0], format="csc") * 1e-12).solve(A.T @ b)
    poses = np.tile(np.eye(k + 1), (n, 1, 1))
    poses[:, :k, :k] = R
    poses[1:, :k, k] = t.reshape(n - 1, k)
    return poses
