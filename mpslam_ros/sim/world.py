"""The synthetic indoor world: axis-aligned boxes (walls, floor, ceiling, furniture) and their texture.

The house is a 3 x 2 grid of square rooms joined by doors in every shared wall, so a robot can drive
loops through the rooms and come back to places it has seen. Every box face is a textured rectangle;
the texture is one large procedural image (multi-scale noise plus sharp-edged random shapes, so
FAST/ORB corners and KLT gradients exist at every viewing distance) that faces sample at different,
hashed offsets so no two faces look alike. A mip pyramid, built with a Gaussian prefilter, lets the
renderer pick the level matching each pixel's footprint (no texture aliasing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

#: Texture side length in texels (power of two: the renderer wraps coordinates with a bit mask).
TEXTURE_SIZE = 4096
#: Metres per texel at mip level 0 (4096 texels = 20.5 m before the texture wraps).
TEXEL_M = 0.005


@dataclass
class HouseLayout:
    """Geometry parameters of the house (metres)."""

    rooms_x: int = 3
    rooms_y: int = 2
    room_size: float = 4.0
    height: float = 2.6
    wall_thickness: float = 0.1
    door_width: float = 1.0
    door_height: float = 2.0


@dataclass
class World:
    """Boxes of the scene and the textured faces the renderer draws.

    ``faces`` is float64[n, 12]: axis k, sign s (outward normal = s e_k), plane coordinate,
    min/max of the two in-plane axes ((k+1)%3, (k+2)%3), texture offsets (texels), gain, bias,
    shade factor. ``texture`` is the flattened uint8 mip pyramid; ``mip_offsets[l]`` is where level
    l (side ``TEXTURE_SIZE >> l``) starts.
    """

    layout: HouseLayout
    boxes: np.ndarray  # float64[m, 6]: xmin, ymin, zmin, xmax, ymax, zmax
    box_kind: list  # "floor", "ceiling", "wall", "furniture" per box
    faces: np.ndarray
    texture: np.ndarray
    mip_offsets: np.ndarray
    texel_m: float = TEXEL_M
    seed: int = 0
    room_centers: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    @property
    def num_mip_levels(self) -> int:
        return len(self.mip_offsets)

    def mip_level(self, level: int) -> np.ndarray:
        size = TEXTURE_SIZE >> level
        start = int(self.mip_offsets[level])
        return self.texture[start:start + size * size].reshape(size, size)

    def free_of_obstacles(self, xy: np.ndarray, clearance: float) -> np.ndarray:
        """True for each 2D point farther than ``clearance`` from every wall and furniture box
        reaching below 1.5 m (door lintels and the ceiling do not block)."""
        xy = np.atleast_2d(xy)
        ok = np.ones(len(xy), dtype=bool)
        for box, kind in zip(self.boxes, self.box_kind):
            if kind in ("floor", "ceiling") or box[2] > 1.5:
                continue
            inside = ((xy[:, 0] > box[0] - clearance) & (xy[:, 0] < box[3] + clearance)
                      & (xy[:, 1] > box[1] - clearance) & (xy[:, 1] < box[4] + clearance))
            ok &= ~inside
        return ok


def _wall_boxes(layout: HouseLayout) -> list:
    """Outer walls plus inner walls with a centred door opening in every room-to-room wall."""
    L, H, th = layout.room_size, layout.height, layout.wall_thickness
    W, D = layout.rooms_x * L, layout.rooms_y * L
    h = th / 2
    boxes = [
        (-h, -h, 0.0, W + h, h, H),  # south
        (-h, D - h, 0.0, W + h, D + h, H),  # north
        (-h, -h, 0.0, h, D + h, H),  # west
        (W - h, -h, 0.0, W + h, D + h, H),  # east
    ]
    dw, dh = layout.door_width / 2, layout.door_height
    # Inner walls at x = i L, split per room along y with a door at the room's centre line.
    for i in range(1, layout.rooms_x):
        x = i * L
        for j in range(layout.rooms_y):
            y0, y1, yc = j * L, (j + 1) * L, (j + 0.5) * L
            boxes += [(x - h, y0 + h, 0.0, x + h, yc - dw, H), (x - h, yc + dw, 0.0, x + h, y1 - h, H),
                      (x - h, yc - dw, dh, x + h, yc + dw, H)]
    for j in range(1, layout.rooms_y):
        y = j * L
        for i in range(layout.rooms_x):
            x0, x1, xc = i * L, (i + 1) * L, (i + 0.5) * L
            boxes += [(x0 + h, y - h, 0.0, xc - dw, y + h, H), (xc + dw, y - h, 0.0, x1 - h, y + h, H),
                      (xc - dw, y - h, dh, xc + dw, y + h, H)]
    return boxes


def _furniture_boxes(layout: HouseLayout, rng: np.random.Generator) -> list:
    """Random boxes in the room corners, clear of the cross-shaped paths through room centres."""
    L, th = layout.room_size, layout.wall_thickness
    keep_clear = 0.85  # metres from each room's centre lines (the robot drives along them)
    boxes = []
    for i in range(layout.rooms_x):
        for j in range(layout.rooms_y):
            x0, y0 = i * L, j * L
            for qx in (0, 1):
                for qy in (0, 1):
                    if rng.random() < 0.2:
                        continue  # leave some corners empty
                    # Corner square between the wall and the clear zone around the centre lines.
                    lo, hi = th / 2 + 0.02, L / 2 - keep_clear
                    sx = rng.uniform(0.4, hi - lo)
                    sy = rng.uniform(0.4, hi - lo)
                    bx = x0 + (lo if qx == 0 else L - lo - sx)
                    by = y0 + (lo if qy == 0 else L - lo - sy)
                    z1 = rng.choice([rng.uniform(0.4, 0.9), rng.uniform(1.0, 2.0)])
                    boxes.append((bx, by, 0.0, bx + sx, by + sy, z1))
                    if rng.random() < 0.5:  # something on top: a smaller box
                        s2x, s2y = sx * rng.uniform(0.3, 0.6), sy * rng.uniform(0.3, 0.6)
                        ox, oy = bx + rng.uniform(0, sx - s2x), by + rng.uniform(0, sy - s2y)
                        boxes.append((ox, oy, z1, ox + s2x, oy + s2y, z1 + rng.uniform(0.15, 0.4)))
    return boxes


def make_texture(seed: int, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Non-repeating multi-scale texture (uint8[size, size]): pink noise plus random sharp shapes."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), np.float32)
    # Pink-ish noise: octaves from 16 to size/2 cells, amplitude falling with frequency.
    cells = 16
    while cells <= size // 2:
        octave = rng.standard_normal((cells, cells)).astype(np.float32)
        img += cv2.resize(octave, (size, size), interpolation=cv2.INTER_CUBIC) * (cells ** -0.35)
        cells *= 2
    img = (img - img.mean()) / (img.std() + 1e-6) * 28.0 + 128.0
    # Sharp-edged shapes (corners for FAST/ORB) at sizes from 1.5 cm to 35 cm.
    for _ in range(int(16000 * (size / 4096) ** 2)):
        r = int(np.exp(rng.uniform(np.log(3), np.log(70))))
        cx, cy = int(rng.integers(0, size)), int(rng.integers(0, size))
        val = float(rng.uniform(15, 240))
        kind = rng.integers(0, 4)
        if kind == 0:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), val, -1)
        elif kind == 1:
            cv2.circle(img, (cx, cy), r, val, -1)
        elif kind == 2:
            pts = (rng.uniform(-r, r, (3, 2)) + (cx, cy)).astype(np.int32)
            cv2.fillConvexPoly(img, pts, val)
        else:
            cv2.line(img, (cx - r, cy), (cx + r, cy + int(rng.uniform(-r, r))), val, max(1, r // 8))
    # Light detail noise, then a mild prefilter so level 0 itself does not alias.
    img += rng.standard_normal((size, size)).astype(np.float32) * 6.0
    img = cv2.GaussianBlur(img, (0, 0), 0.8)
    return np.clip(img, 0, 255).astype(np.uint8)


def build_mip_pyramid(texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mip pyramid flattened into one array, and the start offset of each level.

    Texel i of level l covers texels 2i and 2i+1 of level l-1, so texel centres stay registered
    across levels (cv2.pyrDown would centre level l on texel 2i and shift the texture by half a
    texel per level). Each level is a light Gaussian prefilter (with wrap-around borders, so the
    texture tiles at every level) followed by a 2x2 average.
    """
    levels = [texture]
    while levels[-1].shape[0] > 8:
        prev = levels[-1].astype(np.float32)
        pad = 4
        blurred = cv2.GaussianBlur(np.pad(prev, pad, mode="wrap"), (0, 0), 0.6)[pad:-pad, pad:-pad]
        h, w = prev.shape
        down = blurred.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        levels.append(np.clip(np.round(down), 0, 255).astype(np.uint8))
    offsets = np.cumsum([0] + [lv.size for lv in levels[:-1]]).astype(np.int64)
    return np.concatenate([lv.ravel() for lv in levels]), offsets


def _faces_of_boxes(boxes: np.ndarray, kinds: list, rng: np.random.Generator) -> np.ndarray:
    faces = []
    shade_by_axis = {0: 0.92, 1: 0.78}
    for box, kind in zip(boxes, kinds):
        lo, hi = box[:3], box[3:]
        # Per-box material: contrast and brightness (rooms and furniture look different).
        gain = rng.uniform(0.75, 1.1)
        bias = rng.uniform(-25.0, 25.0)
        for k in range(3):
            for s in (-1.0, 1.0):
                i, j = (k + 1) % 3, (k + 2) % 3
                plane = hi[k] if s > 0 else lo[k]
                if kind == "floor" and not (k == 2 and s > 0):
                    continue  # only the floor's top face can be seen
                if kind == "ceiling" and not (k == 2 and s < 0):
                    continue
                shade = shade_by_axis.get(k, 1.0 if s > 0 else 0.85)
                off_u, off_v = rng.uniform(0, TEXTURE_SIZE, 2)
                faces.append([k, s, plane, lo[i], hi[i], lo[j], hi[j], off_u, off_v, gain, bias, shade])
    return np.array(faces, dtype=np.float64)


def build_house(seed: int = 0, layout: HouseLayout | None = None, texture: np.ndarray | None = None) -> World:
    """The house world for ``seed``: walls with doors, floor, ceiling, random furniture, texture."""
    layout = layout or HouseLayout()
    rng = np.random.default_rng(seed)
    W, D, H = layout.rooms_x * layout.room_size, layout.rooms_y * layout.room_size, layout.height
    boxes = [(-1.0, -1.0, -0.2, W + 1, D + 1, 0.0), (-1.0, -1.0, H, W + 1, D + 1, H + 0.2)]
    kinds = ["floor", "ceiling"]
    walls = _wall_boxes(layout)
    furniture = _furniture_boxes(layout, rng)
    boxes += walls + furniture
    kinds += ["wall"] * len(walls) + ["furniture"] * len(furniture)
    boxes = np.array(boxes, dtype=np.float64)
    faces = _faces_of_boxes(boxes, kinds, rng)
    if texture is None:
        texture = make_texture(seed)
    pyramid, offsets = build_mip_pyramid(texture)
    centers = np.array([((i + 0.5) * layout.room_size, (j + 0.5) * layout.room_size)
                        for j in range(layout.rooms_y) for i in range(layout.rooms_x)])
    return World(layout=layout, boxes=boxes, box_kind=kinds, faces=faces, texture=pyramid,
                 mip_offsets=offsets, seed=seed, room_centers=centers)
