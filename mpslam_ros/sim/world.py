"""The synthetic indoor world: axis-aligned boxes (walls, floor, ceiling, furniture) and their texture.

The house is a 3 x 2 grid of square rooms joined by doors in every shared wall, so a robot can drive
loops through the rooms and come back to places it has seen. Every box face is a textured rectangle;
the texture is one large procedural image (multi-scale noise plus sharp-edged random shapes, so
FAST/ORB corners and KLT gradients exist at every viewing distance) that faces sample at different,
hashed offsets so no two faces look alike. A mip pyramid, built with a Gaussian prefilter, lets the
renderer pick the level matching each pixel's footprint (no texture aliasing).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

#: Texture side length in texels (power of two: the renderer wraps coordinates with a bit mask).
TEXTURE_SIZE = 4096
#: Metres per texel at mip level 0 (4096 texels = 20.5 m before the texture wraps).
TEXEL_M = 0.005
#: Texture contrast left on a plain (painted) wall: a faint mottling, no corners for FAST.
PLAIN_WALL_CONTRAST = 0.03
#: Light level of a dark zone (a corner without a lamp): 15 % of its neighbours'.
DARK_ZONE_LIGHT = 0.15
#: Side of the world's light cells (metres): light changes and dark zones act per cell.
LIGHT_CELL_M = 4.0


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

    layout: object  # HouseLayout, OfficeLayout or WarehouseLayout
    boxes: np.ndarray  # float64[m, 6]: xmin, ymin, zmin, xmax, ymax, zmax
    box_kind: list  # "floor", "ceiling", "wall", "furniture" per box
    faces: np.ndarray
    texture: np.ndarray
    mip_offsets: np.ndarray
    texel_m: float = TEXEL_M
    seed: int = 0
    room_centers: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    #: "house", "office" or "warehouse" (which builder made it).
    kind: str = "house"
    #: int[k, 2]: the 4 m light cells left dark (:func:`with_scene_effects`); movers there are dark too.
    dark_cells: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))

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


def _faces_of_boxes(boxes: np.ndarray, kinds: list, rng: np.random.Generator,
                    motifs: dict | None = None) -> np.ndarray:
    """Textured faces of the boxes (one random material per box, random texture offsets per face).

    ``motifs`` maps (box index, axis k, sign s) to a motif id: every face of one motif looks exactly
    like the motif's first face (same material, texture offsets shifted with the box), which makes
    the repeated panels of a look-alike corridor.
    """
    motifs = motifs or {}
    faces = []
    first: dict = {}  # motif id -> (face row, min corner of its box)
    shade_by_axis = {0: 0.92, 1: 0.78}
    for b, (box, kind) in enumerate(zip(boxes, kinds)):
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
                row = [k, s, plane, lo[i], hi[i], lo[j], hi[j], off_u, off_v, gain, bias, shade]
                motif = motifs.get((b, k, s))
                if motif is not None:
                    if motif in first:
                        ref, ref_lo = first[motif]
                        d = lo - ref_lo
                        row[7] = ref[7] - d[i] / TEXEL_M
                        row[8] = ref[8] - d[j] / TEXEL_M
                        row[9:] = ref[9:]
                    else:
                        first[motif] = (row, lo.copy())
                faces.append(row)
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
                 mip_offsets=offsets, seed=seed, room_centers=centers, kind="house")


@dataclass
class OfficeLayout:
    """An office floor (metres): a ring corridor around a closed inner block, a band of rooms along the
    south and the north side (doors onto the corridor). The north corridor is built from identical
    ``room_width`` panels (walls, doors, floor and ceiling tiles), a look-alike place every few metres."""

    length: float = 24.0
    depth: float = 14.0
    room_depth: float = 4.0
    room_width: float = 4.0
    corridor_width: float = 2.0
    height: float = 2.7
    wall_thickness: float = 0.1
    door_width: float = 1.0
    door_height: float = 2.1
    #: Longest box side with its own texture offsets (the texture wraps every 20.5 m).
    max_panel: float = 6.0

    @property
    def ring(self) -> tuple:
        """Corridor centre line: (x0, y0, x1, y1) of the rectangle the robot drives around."""
        c = self.corridor_width / 2
        return (c, self.room_depth + c, self.length - c, self.depth - self.room_depth - c)


def _split(a0: float, a1: float, step: float) -> list:
    n = max(1, int(np.ceil((a1 - a0) / step - 1e-9)))
    edges = np.linspace(a0, a1, n + 1)
    return list(zip(edges[:-1], edges[1:]))


def build_office(seed: int = 0, layout: OfficeLayout | None = None, texture: np.ndarray | None = None) -> World:
    """The office world for ``seed``: ring corridor, rooms with desks, a repeated-texture north corridor."""
    lay = layout or OfficeLayout()
    rng = np.random.default_rng(seed + 7)
    W, D, H, R, C = lay.length, lay.depth, lay.height, lay.room_depth, lay.corridor_width
    th, h = lay.wall_thickness, lay.wall_thickness / 2
    rw, dw, dh = lay.room_width, lay.door_width / 2, lay.door_height
    boxes, kinds = [], []
    motifs: dict = {}

    def add(box, kind, motif=None, faces=()):
        for k, s in faces:
            motifs[(len(boxes), k, s)] = motif
        boxes.append(box)
        kinds.append(kind)

    yn0, yn1 = D - R - C, D - R  # the repeated north corridor
    # Floor and ceiling in tiles (no texture wrap); in the north corridor one tile per room width.
    for zlo, zhi, kind, face in ((-0.2, 0.0, "floor", (2, 1.0)), (H, H + 0.2, "ceiling", (2, -1.0))):
        for y0, y1 in [(-1.0, yn0)] + [(yn1, D + 1.0)]:
            for ya, yb in _split(y0, y1, lay.max_panel):
                for xa, xb in _split(-1.0, W + 1.0, lay.max_panel):
                    add((xa, ya, zlo, xb, yb, zhi), kind)
        for q, (xa, xb) in enumerate(_split(0.0, W, rw)):
            add((xa, yn0, zlo, xb, yn1, zhi), kind, f"{kind}_north", [face])
        for xa, xb in ((-1.0, 0.0), (W, W + 1.0)):
            add((xa, yn0, zlo, xb, yn1, zhi), kind)
    # Outer walls, in panels.
    for xa, xb in _split(-h, W + h, lay.max_panel):
        add((xa, -h, 0.0, xb, h, H), "wall")
        add((xa, D - h, 0.0, xb, D + h, H), "wall")
    for ya, yb in _split(h, D - h, lay.max_panel):
        add((-h, ya, 0.0, h, yb, H), "wall")
        add((W - h, ya, 0.0, W + h, yb, H), "wall")
    # Room bands: partition walls, and the corridor wall with a door per room (north: identical panels).
    n_rooms = int(round(W / rw))
    for band, (y_in, y_wall, face_s) in enumerate(((0.0, R, 1.0), (D, D - R, -1.0))):
        ya, yb = sorted((y_in, y_wall))
        for q in range(1, n_rooms):
            add((q * rw - h, ya + h, 0.0, q * rw + h, yb - h, H), "wall")
            add((q * rw - h, y_wall - h, 0.0, q * rw + h, y_wall + h, H), "wall",  # where it meets the corridor
                "north_pillar" if band == 1 else None, [(1, face_s)])
        for q in range(n_rooms):
            x0, x1, xc = q * rw, (q + 1) * rw, (q + 0.5) * rw
            motif = (lambda part: f"north_{part}") if band == 1 else (lambda part: None)
            face = [(1, face_s)]
            add((x0 + h, y_wall - h, 0.0, xc - dw, y_wall + h, H), "wall", motif("left"), face)
            add((xc + dw, y_wall - h, 0.0, x1 - h, y_wall + h, H), "wall", motif("right"), face)
            add((xc - dw, y_wall - h, dh, xc + dw, y_wall + h, H), "wall", motif("lintel"), face + [(2, -1.0)])
            # A desk against the room's back wall and sometimes a cabinet in a corner.
            dwid = rng.uniform(1.2, 2.4)
            dx = x0 + rng.uniform(0.2, rw - dwid - 0.2)
            if band == 0:
                add((dx, h + 0.02, 0.0, dx + dwid, h + 0.8, 0.75), "furniture")
            else:
                add((dx, D - h - 0.8, 0.0, dx + dwid, D - h - 0.02, 0.75), "furniture")
            if rng.random() < 0.5:
                cx = x0 + (h + 0.02 if rng.random() < 0.5 else rw - h - 0.62)
                cy = R - 1.2 if band == 0 else D - R + 0.6
                add((cx, cy, 0.0, cx + 0.6, cy + 0.6, rng.uniform(1.0, 1.9)), "furniture")
    # The inner block, in room-width slices whose north faces repeat.
    for xa, xb in _split(C, W - C, rw):
        add((xa, R + C, 0.0, xb, D - R - C, H), "wall", "north_block", [(1, 1.0)])
    boxes = np.array(boxes, dtype=np.float64)
    faces = _faces_of_boxes(boxes, kinds, rng, motifs)
    if texture is None:
        texture = make_texture(seed)
    pyramid, offsets = build_mip_pyramid(texture)
    centers = np.array([((q + 0.5) * rw, R / 2) for q in range(n_rooms)]
                       + [((q + 0.5) * rw, D - R / 2) for q in range(n_rooms)])
    return World(layout=lay, boxes=boxes, box_kind=kinds, faces=faces, texture=pyramid, mip_offsets=offsets,
                 seed=seed, room_centers=centers, kind="office")


@dataclass
class WarehouseLayout:
    """A warehouse hall (metres): ``racks`` long shelving racks along x with aisles between them, a
    cross aisle at the far (east) end and an open loading area at the west end. Rack faces are built
    from ``bay_length`` bays; most bays look exactly alike (the same shelving frame and goods: a
    look-alike place every bay, in every aisle), the rest hold other goods."""

    racks: int = 5
    rack_depth: float = 1.2
    aisle_width: float = 3.0
    bay_length: float = 2.75
    bays: int = 8
    rack_height: float = 4.0
    beam_heights: tuple = (0.15, 1.4, 2.65)
    open_area: float = 10.0  # west of the racks
    cross_aisle: float = 4.0  # east of the racks
    height: float = 6.0
    wall_thickness: float = 0.2
    #: Fraction of bays with their own goods (not the repeated motif).
    unique_bays: float = 0.3
    pallet_stacks: int = 10
    max_panel: float = 6.0

    @property
    def rack_x(self) -> tuple:
        """(x0, x1) of every rack."""
        return (self.open_area, self.open_area + self.bays * self.bay_length)

    @property
    def length(self) -> float:
        return self.rack_x[1] + self.cross_aisle

    @property
    def lane_x(self) -> float:
        """x of the north-south lane through the open area (the robot's way between aisles)."""
        return self.open_area / 2

    @property
    def depth(self) -> float:
        return self.racks * self.rack_depth + (self.racks - 1) * self.aisle_width

    def aisle_y(self, a: int) -> float:
        """Centre line of aisle ``a`` (0 .. racks-2, south to north)."""
        return (a + 1) * self.rack_depth + (a + 0.5) * self.aisle_width


def build_warehouse(seed: int = 0, layout: WarehouseLayout | None = None,
                    texture: np.ndarray | None = None) -> World:
    """The warehouse world for ``seed``: shelving racks of repeated bays, a cross aisle, an open area
    with pallet stacks, walls, floor and ceiling in tiles."""
    lay = layout or WarehouseLayout()
    rng = np.random.default_rng(seed + 11)
    W, D, H = lay.length, lay.depth, lay.height
    h = lay.wall_thickness / 2
    boxes, kinds = [], []
    motifs: dict = {}

    def add(box, kind, motif=None, faces=()):
        for k, s in faces:
            motifs[(len(boxes), k, s)] = motif
        boxes.append(box)
        kinds.append(kind)

    for zlo, zhi, kind in ((-0.2, 0.0, "floor"), (H, H + 0.2, "ceiling")):
        for ya, yb in _split(-1.0, D + 1.0, lay.max_panel):
            for xa, xb in _split(-1.0, W + 1.0, lay.max_panel):
                add((xa, ya, zlo, xb, yb, zhi), kind)
    for xa, xb in _split(-h, W + h, lay.max_panel):
        add((xa, -2 * h, 0.0, xb, 0.0, H), "wall")
        add((xa, D, 0.0, xb, D + 2 * h, H), "wall")
    for ya, yb in _split(0.0, D, lay.max_panel):
        add((-2 * h, ya, 0.0, 0.0, yb, H), "wall")
        add((W, ya, 0.0, W + 2 * h, yb, H), "wall")
    # Racks: one box per bay; a repeated bay shows the same face to both aisles (motif per side).
    x0 = lay.rack_x[0]
    for r in range(lay.racks):
        ya = r * (lay.rack_depth + lay.aisle_width)
        for b in range(lay.bays):
            xa = x0 + b * lay.bay_length
            faces = [(1, -1.0), (1, 1.0)]
            motif = None if rng.random() < lay.unique_bays else "bay"
            add((xa, ya, 0.0, xa + lay.bay_length, ya + lay.rack_depth, lay.rack_height), "furniture", motif, faces)
        # shelf beams along both aisle faces, one per bay (the same everywhere: edges that repeat)
        for z in lay.beam_heights:
            for y0, y1 in ((ya - 0.06, ya), (ya + lay.rack_depth, ya + lay.rack_depth + 0.06)):
                for b in range(lay.bays):
                    xa = x0 + b * lay.bay_length
                    add((xa, y0, z, xa + lay.bay_length, y1, z + 0.1), "furniture", f"beam{z}", [(1, -1.0), (1, 1.0)])
    # Pallet stacks in the open area, clear of the lanes the robot drives: north-south at x = lane,
    # and east from there along every aisle's centre line.
    lane = lay.lane_x
    aisles = np.array([lay.aisle_y(a) for a in range(lay.racks - 1)])
    placed = 0
    while placed < lay.pallet_stacks:
        sx, sy = rng.uniform(0.8, 1.4, 2)
        px = rng.uniform(0.3, lay.open_area - sx - 0.5)
        py = rng.uniform(0.3, D - sy - 0.3)
        if px < lane + 1.3 and px + sx > lane - 1.3:
            continue
        if px + sx > lane and np.any((aisles > py - 1.3) & (aisles < py + sy + 1.3)):
            continue
        add((px, py, 0.0, px + sx, py + sy, rng.uniform(0.6, 2.2)), "furniture")
        placed += 1
    boxes = np.array(boxes, dtype=np.float64)
    faces = _faces_of_boxes(boxes, kinds, rng, motifs)
    if texture is None:
        texture = make_texture(seed)
    pyramid, offsets = build_mip_pyramid(texture)
    centers = np.array([((x0 + lay.rack_x[1]) / 2, lay.aisle_y(a)) for a in range(lay.racks - 1)])
    return World(layout=lay, boxes=boxes, box_kind=kinds, faces=faces, texture=pyramid, mip_offsets=offsets,
                 seed=seed, room_centers=centers, kind="warehouse")


#: World builders by kind.
WORLDS = {"house": build_house, "office": build_office, "warehouse": build_warehouse}


#: How fast a person steps aside for the camera (a quick sidestep; their walk is 0.6-1.3 m/s).
DODGE_SPEED_M_S = 1.5


@dataclass
class Mover:
    """A box (person, trolley) walking back and forth along a segment at constant speed; with a
    ``walk`` (from :func:`give_way_to_camera`) it follows that instead, waiting or stepping aside
    where the free walk would come too close to the camera."""

    size: np.ndarray  # (sx, sy, sz)
    start: np.ndarray  # (x, y) of the box centre at one end
    end: np.ndarray
    speed: float
    phase_s: float
    walk: tuple | None = None  # (times_s, along, aside): a walk that gives way, see give_way_to_camera

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.end - self.start))

    def free_progress(self, t: float) -> float:
        """Distance along the segment at ``t`` walking back and forth, ignoring the camera."""
        length = self.length
        s = (t * self.speed + self.phase_s * self.speed) % (2 * length)
        return s if s <= length else 2 * length - s  # ping-pong

    def centre(self, t: float) -> np.ndarray:
        axis = (self.end - self.start) / max(self.length, 1e-9)
        if self.walk is None:
            return self.start + axis * self.free_progress(t)
        times, along, aside = self.walk
        normal = np.array([-axis[1], axis[0]])
        return self.start + axis * float(np.interp(t, times, along)) + normal * float(np.interp(t, times, aside))


def give_way_to_camera(mover: Mover, world: World, times_s: np.ndarray, camera_xy: np.ndarray,
                       clearance_m: float) -> Mover:
    """``mover`` walking as a person does near a robot or someone holding a camera: it does not come
    closer than ``clearance_m`` (centre to camera, in the floor plane) on its own. Where its next step
    would, it waits; where the camera comes to it, it steps aside (away from the camera, or across to
    the other side where a wall is in the way; it keeps to the side it chose), and back along its
    segment if that is not enough, at most :data:`DODGE_SPEED_M_S`; back on its way once the camera has
    passed. So the camera does come closer where it is faster than that or the passage is too narrow
    for both. ``camera_xy`` (n, 2) at ``times_s`` (a fine, even grid: the walk's time resolution)."""
    length = mover.length
    if clearance_m <= 0 or length < 1e-9:
        return mover
    axis = (mover.end - mover.start) / length
    normal = np.array([-axis[1], axis[0]])
    body = 0.5 * float(max(mover.size[:2])) + 0.1  # the margin make_movers keeps from obstacles
    phase = (float(times_s[0]) + mover.phase_s) * mover.speed % (2 * length)
    s, d = mover.free_progress(float(times_s[0])), 1.0 if phase <= length else -1.0
    side_off, side = 0.0, 0.0  # how far and to which side (+-1) of its segment it stepped
    along, aside = np.empty(len(times_s)), np.empty(len(times_s))

    def at(s_: float, o_: float) -> np.ndarray:
        return mover.start + axis * s_ + normal * o_

    for k in range(len(times_s)):
        c = camera_xy[k]
        dt = float(times_s[k] - times_s[max(k - 1, 0)])
        step = mover.speed * dt
        dodge = DODGE_SPEED_M_S * dt if k else 2.0 * clearance_m  # nobody starts where the camera is
        nxt = s + d * step
        if nxt > length or nxt < 0.0:  # turn at the segment's ends
            d = -d
            nxt = min(max(nxt, 0.0), length)
        if np.linalg.norm(at(nxt, side_off) - c) >= clearance_m:
            s = nxt  # else wait for the camera to pass
        rel = at(s, side_off) - c
        if np.linalg.norm(rel) < clearance_m:  # the camera comes to it
            a, b = float(rel @ axis), float(rel @ normal)
            side = side or (1.0 if b >= 0 else -1.0)
            for sd in (side, -side):
                target = side_off + sd * np.sqrt(max(clearance_m ** 2 - a * a, 0.0)) - b
                o = side_off + float(np.clip(target - side_off, -dodge, dodge))
                if world.free_of_obstacles(at(s, o)[None], body)[0]:
                    side_off, side = o, sd
                    break
            rel = at(s, side_off) - c
            if np.linalg.norm(rel) < clearance_m:  # not clear yet: step back along the segment too
                a, b = float(rel @ axis), float(rel @ normal)
                half = np.sqrt(max(clearance_m ** 2 - b * b, 0.0))
                target = min(max(s - a + (-half if a < 0 else half), 0.0), length)
                s += float(np.clip(target - s, -dodge, dodge))
        elif side_off != 0.0:  # back onto its segment where that keeps it clear
            o = side_off - np.copysign(min(step, abs(side_off)), side_off)
            if np.linalg.norm(at(s, o) - c) >= clearance_m:
                side_off = o
                side = side if o != 0.0 else 0.0
        along[k], aside[k] = s, side_off
    return replace(mover, walk=(np.asarray(times_s, np.float64).copy(), along, aside))


def make_movers(world: World, count: int, seed: int) -> tuple:
    """``count`` movers on free straight segments (axis-aligned, 2-6 m) of ``world``, and the base
    faces of their boxes (at their start point) for :func:`faces_at`."""
    rng = np.random.default_rng(seed + 3030)
    movers, boxes = [], []
    lo = world.boxes[:, :2].min(axis=0) + 1.0
    hi = world.boxes[:, 3:5].max(axis=0) - 1.0
    tries = 0
    while len(movers) < count and tries < 2000:
        tries += 1
        size = np.array([0.5, 0.4, 1.75]) if rng.random() < 0.7 else np.array([0.9, 0.6, 1.1])
        p = rng.uniform(lo, hi)
        axis = rng.integers(0, 2)
        length = rng.uniform(2.0, 6.0)
        q = p.copy()
        q[axis] += length * rng.choice([-1.0, 1.0])
        line = p + (q - p) * np.linspace(0, 1, 25)[:, None]
        if not world.free_of_obstacles(line, 0.5 * max(size[:2]) + 0.1).all():
            continue
        movers.append(Mover(size, p, q, float(rng.uniform(0.6, 1.3)), float(rng.uniform(0, 20))))
        boxes.append((p[0] - size[0] / 2, p[1] - size[1] / 2, 0.0, p[0] + size[0] / 2, p[1] + size[1] / 2, size[2]))
    faces = _faces_of_boxes(np.array(boxes, dtype=np.float64).reshape(-1, 6), ["furniture"] * len(boxes), rng)
    return movers, faces


def face_cells(faces: np.ndarray, cell_m: float = LIGHT_CELL_M) -> np.ndarray:
    """int[n, 2]: the (x, y) cell of each face's centre (light zones for lighting changes)."""
    centre = np.empty((len(faces), 3))
    for q, f in enumerate(faces):
        k = int(f[0])
        centre[q, k] = f[2]
        centre[q, (k + 1) % 3] = (f[3] + f[4]) / 2
        centre[q, (k + 2) % 3] = (f[5] + f[6]) / 2
    return np.floor(centre[:, :2] / cell_m).astype(np.int64)


def faces_at(static_faces: np.ndarray, movers: list, mover_faces: np.ndarray, t: float,
             light: np.ndarray | None = None, dark_cells: np.ndarray | None = None) -> np.ndarray:
    """The scene's faces at time ``t``: static faces with their light level (``light`` per face,
    multiplying material gain and bias) plus the movers' boxes moved to where they are at ``t``
    (texture offsets moved along, so the texture sticks to the box); a mover whose centre is in one
    of the ``dark_cells`` (4 m light cells) is as dark as that cell."""
    faces = static_faces.copy()
    if light is not None:
        faces[:, 9] *= light
        faces[:, 10] *= light
    if not movers:
        return faces
    moved = mover_faces.copy()
    per_box = len(mover_faces) // len(movers)
    for m, mover in enumerate(movers):
        d = np.zeros(3)
        d[:2] = mover.centre(t) - mover.start
        rows = moved[m * per_box:(m + 1) * per_box]
        for r in rows:
            k = int(r[0])
            i, j = (k + 1) % 3, (k + 2) % 3
            r[2] += d[k]
            r[3:5] += d[i]
            r[5:7] += d[j]
            r[7] -= d[i] / TEXEL_M
            r[8] -= d[j] / TEXEL_M
        if dark_cells is not None and len(dark_cells):
            cell = np.floor(mover.centre(t) / LIGHT_CELL_M).astype(np.int64)
            if (dark_cells == cell).all(axis=1).any():
                rows[:, 9:11] *= DARK_ZONE_LIGHT
    return np.concatenate([faces, moved])


def is_wall_face(faces: np.ndarray, min_height_m: float = 2.0) -> np.ndarray:
    """bool[n]: vertical faces at least ``min_height_m`` tall (walls and wall panels, not furniture)."""
    k = faces[:, 0].astype(np.int64)
    # z is in-plane axis (k+1)%3 == 2 for k = 1 (columns 3:5) and (k+2)%3 == 2 for k = 0 (columns 5:7)
    z_extent = np.where(k == 1, faces[:, 4] - faces[:, 3], faces[:, 6] - faces[:, 5])
    return (k != 2) & (z_extent >= min_height_m)


def with_scene_effects(world: World, textureless_walls: float = 0.0, dark_zones: float = 0.0,
                       seed: int = 0) -> World:
    """``world`` with a seeded share ``textureless_walls`` of its wall faces painted plain (texture
    contrast x :data:`PLAIN_WALL_CONTRAST`, same mean brightness) and a seeded share ``dark_zones`` of
    its 4 m light cells (:func:`face_cells`) dimmed to :data:`DARK_ZONE_LIGHT`: the textureless walls
    and dark corners where trackers lose their features. Geometry is unchanged (ground truth holds)."""
    for name, value in (("textureless_walls", textureless_walls), ("dark_zones", dark_zones)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a share in [0, 1], got {value}")
    if textureless_walls == 0.0 and dark_zones == 0.0:
        return world
    faces, dark_cells = world.faces.copy(), world.dark_cells
    if textureless_walls > 0:
        rng = np.random.default_rng(seed + 9173)
        plain = is_wall_face(faces) & (rng.random(len(faces)) < textureless_walls)
        mean_texel = float(world.mip_level(0).mean())
        gain = faces[plain, 9]
        faces[plain, 10] += gain * mean_texel * (1.0 - PLAIN_WALL_CONTRAST)
        faces[plain, 9] = gain * PLAIN_WALL_CONTRAST
    if dark_zones > 0:
        cells = face_cells(faces)
        uniq, inv = np.unique(cells, axis=0, return_inverse=True)
        dark = np.random.default_rng(seed + 9281).random(len(uniq)) < dark_zones
        light = np.where(dark[inv.ravel()], DARK_ZONE_LIGHT, 1.0)
        faces[:, 9] *= light
        faces[:, 10] *= light
        dark_cells = uniq[dark]
    return replace(world, faces=faces, dark_cells=dark_cells)
