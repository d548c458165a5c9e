"""Smooth body trajectories through the house, as functions of time (exact poses at any instant).

- ``household``: a wheeled robot (base_link on the floor) driving at ~0.4 m/s through the room
  centres and doors, alternating a small loop (4 rooms) and a large loop (6 rooms), so it returns to
  the same places with the same heading (loop closures). Corners are circular arcs (yaw rate =
  speed / radius), with small pitch/roll and bounce from the floor.
- ``office``: a robot driving laps of the office floor's ring corridor at 0.5 m/s (52 m a lap with
  the default layout), through the look-alike north corridor every lap (see
  :func:`mpslam_ros.sim.world.build_office`); 100 m and two full revisits in 210 s.
- ``office_handheld``: a person walking the same ring corridor with the camera in hand (6-DoF).
- ``warehouse``: a robot at 0.6 m/s through the aisles of a warehouse (long racks of repeated
  bays, a cross aisle, an open area), revisiting one aisle every lap (:func:`warehouse`).
- ``handheld``: a 6-DoF walk from room A into room B and back, the camera swinging in yaw, pitch and
  roll (smooth sums of sinusoids with seeded phases).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mpslam_ros.sim.world import World

PoseFn = Callable[[np.ndarray], np.ndarray]  # times (s) -> T_world_body float64[n, 4, 4]


def rotation_zyx(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """R = Rz(yaw) Ry(pitch) Rx(roll), vectorised: (n,) angles -> (n, 3, 3)."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    R = np.empty(np.shape(yaw) + (3, 3))
    R[..., 0, 0] = cy * cp
    R[..., 0, 1] = cy * sp * sr - sy * cr
    R[..., 0, 2] = cy * sp * cr + sy * sr
    R[..., 1, 0] = sy * cp
    R[..., 1, 1] = sy * sp * sr + cy * cr
    R[..., 1, 2] = sy * sp * cr - cy * sr
    R[..., 2, 0] = -sp
    R[..., 2, 1] = cp * sr
    R[..., 2, 2] = cp * cr
    return R


def _poses(pos: np.ndarray, yaw, pitch, roll) -> np.ndarray:
    T = np.zeros((len(pos), 4, 4))
    T[:, :3, :3] = rotation_zyx(yaw, pitch, roll)
    T[:, :3, 3] = pos
    T[:, 3, 3] = 1.0
    return T


class FilletedPath:
    """A polyline with circular-arc corners, parameterised by arc length (position + heading)."""

    def __init__(self, waypoints: np.ndarray, radius: float):
        pts = np.asarray(waypoints, dtype=np.float64)
        # Pieces: ("line", p0, p1) or ("arc", centre, r, a0, dtheta), with their lengths.
        self.pieces = []
        start = pts[0]
        for k in range(1, len(pts) - 1):
            a, b, c = pts[k - 1], pts[k], pts[k + 1]
            d1 = (b - a) / np.linalg.norm(b - a)
            d2 = (c - b) / np.linalg.norm(c - b)
            turn = np.arctan2(d1[0] * d2[1] - d1[1] * d2[0], d1 @ d2)
            if abs(turn) < 1e-9:
                continue
            tangent = radius * np.tan(abs(turn) / 2)
            t_in, t_out = b - d1 * tangent, b + d2 * tangent
            self.pieces.append(("line", start, t_in))
            side = np.sign(turn)
            normal = np.array([-d1[1], d1[0]]) * side  # towards the arc centre
            centre = t_in + normal * radius
            a0 = np.arctan2(t_in[1] - centre[1], t_in[0] - centre[0])
            self.pieces.append(("arc", centre, radius, a0, turn))
            start = t_out
        self.pieces.append(("line", start, pts[-1]))
        lengths = [np.linalg.norm(p[2] - p[1]) if p[0] == "line" else p[2] * abs(p[4]) for p in self.pieces]
        self.cum = np.concatenate([[0.0], np.cumsum(lengths)])

    @property
    def length(self) -> float:
        return float(self.cum[-1])

    def at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (n, 2) and headings (n,) at arc lengths ``s`` (clamped to the path)."""
        s = np.clip(np.asarray(s, dtype=np.float64), 0.0, self.length)
        piece = np.clip(np.searchsorted(self.cum, s, side="right") - 1, 0, len(self.pieces) - 1)
        pos = np.empty((len(s), 2))
        heading = np.empty(len(s))
        for k in np.unique(piece):
            sel = piece == k
            ds = s[sel] - self.cum[k]
            p = self.pieces[k]
            if p[0] == "line":
                d = (p[2] - p[1]) / max(np.linalg.norm(p[2] - p[1]), 1e-12)
                pos[sel] = p[1] + ds[:, None] * d
                heading[sel] = np.arctan2(d[1], d[0])
            else:
                _, centre, r, a0, turn = p
                ang = a0 + np.sign(turn) * ds / r
                pos[sel] = centre + r * np.stack([np.cos(ang), np.sin(ang)], axis=1)
                heading[sel] = ang + np.sign(turn) * np.pi / 2
        return pos, heading


def household(world: World, duration_s: float, seed: int, speed: float = 0.4,
              corner_radius: float = 0.8) -> PoseFn:
    """Robot route A B E D | A B C F E D | ... through room centres (rooms numbered row-major)."""
    lay = world.layout
    if lay.rooms_x < 3 or lay.rooms_y < 2:
        raise ValueError("household trajectory needs a house of at least 3 x 2 rooms")

    def centre(i, j):
        return np.array([(i + 0.5) * lay.room_size, (j + 0.5) * lay.room_size])

    A, B, C, D, E, F = centre(0, 0), centre(1, 0), centre(2, 0), centre(0, 1), centre(1, 1), centre(2, 1)
    cycle = [A, B, E, D, A, B, C, F, E, D]
    total = speed * duration_s + 10.0
    waypoints = [A]
    length = 0.0
    while length < total:
        for p in cycle[1:] + [A]:
            length += np.linalg.norm(p - waypoints[-1])
            waypoints.append(p)
    path = FilletedPath(np.array(waypoints), corner_radius)
    rng = np.random.default_rng(seed + 101)
    ph = rng.uniform(0, 2 * np.pi, 6)
    ramp = 2.0  # seconds to accelerate from rest (s(t) is C1)

    def pose(t: np.ndarray) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        s = np.where(t < ramp, speed * t * t / (2 * ramp), speed * (t - ramp / 2))
        xy, yaw = path.at(s)
        # Floor roughness: small roll/pitch (under 1 degree) and a few millimetres of bounce.
        roll = 0.008 * np.sin(2 * np.pi * 0.9 * t + ph[0]) + 0.004 * np.sin(2 * np.pi * 2.3 * t + ph[1])
        pitch = 0.010 * np.sin(2 * np.pi * 0.7 * t + ph[2]) + 0.004 * np.sin(2 * np.pi * 1.9 * t + ph[3])
        z = 0.003 * np.sin(2 * np.pi * 1.3 * t + ph[4])
        return _poses(np.column_stack([xy, z]), np.unwrap(yaw), pitch, roll)

    return pose


def handheld(world: World, duration_s: float, seed: int) -> PoseFn:
    """A person walking from room A through the door into room B and back (period 40 s), looking
    around: yaw swings about the walking direction, pitch and roll wobble. Body z ~0.9 m (the
    camera, 0.5 m above, is at eye-ish height ~1.4 m)."""
    lay = world.layout
    L = lay.room_size
    rng = np.random.default_rng(seed + 202)
    ph = rng.uniform(0, 2 * np.pi, 8)
    w0 = 2 * np.pi / 40.0

    def pose(t: np.ndarray) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        x = L - 0.5 * L * np.cos(w0 * t)  # room A centre (L/2) -> room B centre (3L/2) and back
        y = 0.5 * L + 0.25 * np.sin(2 * w0 * t + ph[0])
        z = 0.9 + 0.08 * np.sin(2 * np.pi * 0.11 * t + ph[1])
        # Face the walking direction (+x out, -x back), turning smoothly at the ends.
        blend = np.clip(np.sin(w0 * t) * 4.0, -1.0, 1.0)
        direction = np.pi * (1 - blend) / 2
        yaw = direction + 0.6 * np.sin(2 * np.pi * 0.09 * t + ph[2]) + 0.2 * np.sin(2 * np.pi * 0.23 * t + ph[3])
        pitch = 0.18 * np.sin(2 * np.pi * 0.13 * t + ph[4]) + 0.05 * np.sin(2 * np.pi * 0.37 * t + ph[5])
        roll = 0.12 * np.sin(2 * np.pi * 0.17 * t + ph[6]) + 0.04 * np.sin(2 * np.pi * 0.41 * t + ph[7])
        return _poses(np.column_stack([x, y, z]), yaw, pitch, roll)

    return pose


def _office_ring(world: World, duration_s: float, seed: int, speed: float, corner_radius: float):
    """Laps of the office's ring corridor (counter-clockwise from a seeded place in the south corridor)
    long enough for ``duration_s`` at ``speed``; the path and the seeded generator (for the motion)."""
    lay = world.layout
    if world.kind != "office":
        raise ValueError("the office trajectories need the office world")
    x0, y0, x1, y1 = lay.ring
    rng = np.random.default_rng(seed + 303)
    start_x = rng.uniform(x0 + 2.0, x1 - 6.0)
    lap = [(x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    total = speed * duration_s + 10.0
    waypoints = [np.array([start_x, y0])]
    length = 0.0
    while length < total:
        for p in lap + [(start_x, y0)]:
            p = np.asarray(p, float)
            length += np.linalg.norm(p - waypoints[-1])
            waypoints.append(p)
    return FilletedPath(np.array(waypoints), corner_radius), rng


def office(world: World, duration_s: float, seed: int, speed: float = 0.5, corner_radius: float = 0.8) -> PoseFn:
    """Laps of the office's ring corridor (counter-clockwise, starting in the south corridor at a
    seeded place), the camera glancing sideways (towards the doors and the inner block) by up to 25
    degrees as it drives."""
    path, rng = _office_ring(world, duration_s, seed, speed, corner_radius)
    return _glancing_robot(path, speed, rng.uniform(0, 2 * np.pi, 6))


def office_handheld(world: World, duration_s: float, seed: int, speed: float = 0.7,
                    corner_radius: float = 1.0) -> PoseFn:
    """A person carrying the camera around the office's ring corridor (6-DoF): walking at 0.7 m/s
    with a 1.8 Hz step bounce, the camera at ~1.4 m swinging in yaw (up to ~45 degrees towards doors
    and walls, with quick turns of up to ~1 rad/s), pitch (+-12 degrees) and roll (+-8 degrees).
    Same laps as ``office``: 52 m a lap, look-alike north corridor."""
    path, rng = _office_ring(world, duration_s, seed + 1000, speed, corner_radius)
    ph = rng.uniform(0, 2 * np.pi, 9)
    ramp = 1.5

    def pose(t: np.ndarray) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        s = np.where(t < ramp, speed * t * t / (2 * ramp), speed * (t - ramp / 2))
        xy, heading = path.at(s)
        # smooth swings plus a quick look-around every ~20 s (cubed sine: slow most of the time)
        yaw = (np.unwrap(heading) + 0.35 * np.sin(2 * np.pi * 0.07 * t + ph[0])
               + 0.45 * np.sin(2 * np.pi * 0.05 * t + ph[1]) ** 5 + 0.05 * np.sin(2 * np.pi * 0.6 * t + ph[2]))
        pitch = 0.15 * np.sin(2 * np.pi * 0.11 * t + ph[3]) + 0.04 * np.sin(2 * np.pi * 0.43 * t + ph[4]) - 0.05
        roll = 0.10 * np.sin(2 * np.pi * 0.13 * t + ph[5]) + 0.04 * np.sin(2 * np.pi * 0.37 * t + ph[6])
        z = 0.9 + 0.02 * np.sin(2 * np.pi * 1.8 * t + ph[7]) + 0.05 * np.sin(2 * np.pi * 0.09 * t + ph[8])
        return _poses(np.column_stack([xy, z]), yaw, pitch, roll)

    return pose


def _glancing_robot(path: FilletedPath, speed: float, ph: np.ndarray) -> PoseFn:
    """A wheeled robot along ``path`` at ``speed`` (2 s ramp from rest), the camera glancing sideways
    by up to 25 degrees (~0.3 rad/s), small roll/pitch and bounce from the floor."""
    ramp = 2.0

    def pose(t: np.ndarray) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        s = np.where(t < ramp, speed * t * t / (2 * ramp), speed * (t - ramp / 2))
        xy, yaw = path.at(s)
        look = 0.45 * np.sin(2 * np.pi * 0.045 * t + ph[5]) ** 3
        roll = 0.008 * np.sin(2 * np.pi * 0.9 * t + ph[0]) + 0.004 * np.sin(2 * np.pi * 2.3 * t + ph[1])
        pitch = 0.010 * np.sin(2 * np.pi * 0.7 * t + ph[2]) + 0.004 * np.sin(2 * np.pi * 1.9 * t + ph[3])
        z = 0.003 * np.sin(2 * np.pi * 1.3 * t + ph[4])
        return _poses(np.column_stack([xy, z]), np.unwrap(yaw) + look, pitch, roll)

    return pose


def warehouse(world: World, duration_s: float, seed: int, speed: float = 0.6, corner_radius: float = 0.8) -> PoseFn:
    """Laps through the warehouse (:func:`mpslam_ros.sim.world.build_warehouse`): east along aisle a
    (seeded), north through the cross aisle, west along aisle a+1 (odd laps) or a+2 (even laps) into
    the open area, south along its lane and back into aisle a. Every lap revisits aisle a, the cross
    aisle and the lane in the same direction; 66-74 m a lap, ~125 m in 210 s."""
    lay = world.layout
    if world.kind != "warehouse":
        raise ValueError("the warehouse trajectory needs the warehouse world")
    rng = np.random.default_rng(seed + 404)
    n_aisles = lay.racks - 1
    a = int(rng.integers(0, max(1, n_aisles - 2)))
    far = [min(a + 1, n_aisles - 1), min(a + 2, n_aisles - 1)]
    ya, xc, lane = lay.aisle_y(a), lay.rack_x[1] + lay.cross_aisle / 2, lay.lane_x
    start = np.array([rng.uniform(lane + 1.5, lay.rack_x[0] + 3.0), ya])
    total = speed * duration_s + 10.0
    waypoints = [start]
    length, lap = 0.0, 0
    while length < total:
        yb = lay.aisle_y(far[lap % 2])
        for p in [(xc, ya), (xc, yb), (lane, yb), (lane, ya), tuple(start)]:
            p = np.asarray(p, float)
            length += np.linalg.norm(p - waypoints[-1])
            waypoints.append(p)
        lap += 1
    return _glancing_robot(FilletedPath(np.array(waypoints), corner_radius), speed, rng.uniform(0, 2 * np.pi, 6))


#: Trajectory kinds by scene name.
SCENES = {"household": household, "handheld": handheld, "office": office, "office_handheld": office_handheld,
          "warehouse": warehouse}
#: The world each scene's trajectory runs in (mpslam_ros.sim.world.WORLDS).
SCENE_WORLDS = {"household": "house", "handheld": "house", "office": "office", "office_handheld": "office",
                "warehouse": "warehouse"}
