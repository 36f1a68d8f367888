"""The built-in procedural head: a FLAME-format model (template, bases, joints, skinning,
pose correctives) and DECA's 68-landmark embedding, built in code from a seed.

Coordinates are FLAME's: metres, x to the subject's left (image right), y up, z towards the
viewer, the head centred near the origin.  "left"/"right" in names always mean the
*subject's* side, as in FLAME's ``eye_left`` joint (x > 0); so ``eyelid_close_left`` closes
the eye of iBUG landmarks 42-47 and ``mouth_corner_up_left`` lifts landmark 54.

How it is made:

- the skin is the outermost surface of a smooth implicit solid (ellipsoids, capsules and a
  nose, smoothly united, with eye sockets carved and eyelid spheres added), sampled along
  rays from one interior point; the ray directions are a conformally zoomed Fibonacci sphere
  (dense on the face), a hexagonal grid over the face and structured rings around the eye
  openings and the lips, so the rims of those openings are exact mesh loops;
- directions of one half (x >= 0) are triangulated by a planar Delaunay of their
  stereographic image and mirrored, so the mesh is exactly left/right symmetric;
- the mouth slit and the eye openings are holes in the skin; a tube of rings behind the lips
  (inner lip, teeth, oral cavity, closed at the back) hangs from the slit, and two eyeballs sit
  in the eyelid spheres;
- identity and expression bases are smooth displacement fields written by hand; the
  identity basis ends with seeded random low-frequency fields.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import Delaunay, cKDTree

from scmcl.face3d.flame import CONTOUR_BIN_YAWS
from scmcl.face3d.flame_model import JOINT_NAMES, FlameModel, LandmarkEmbedding

#: Expression blendshapes, in the order of the expression columns of ``shapedirs``.
EXPRESSION_NAMES = (
    "lips_pucker", "lips_funnel", "lips_stretch", "lips_press", "upper_lip_raise", "lower_lip_depress",
    "mouth_corner_up_left", "mouth_corner_up_right", "mouth_corner_down_left", "mouth_corner_down_right",
    "cheek_raise_left", "cheek_raise_right", "cheek_puff", "nose_wrinkle", "brow_inner_raise",
    "brow_outer_raise_left", "brow_outer_raise_right", "brow_lower", "eyelid_close_left", "eyelid_close_right",
    "eye_wide", "lower_lid_raise", "jaw_forward", "jaw_sideways", "chin_raise",
)

#: Per-vertex material labels (``extras["vertex_region"]`` indexes this tuple).
REGION_NAMES = ("skin", "lips", "brow", "eyelid", "sclera", "iris", "pupil", "mouth", "teeth")

#: Names of the hand-made identity components; seeded random fields follow them.
SHAPE_NAMES = (
    "head_width", "head_height", "head_depth", "cranium_size", "jaw_width", "chin_length", "chin_protrusion",
    "nose_length", "nose_width", "nose_bridge", "cheek_fullness", "cheekbone", "eye_spacing", "eye_height",
    "brow_height", "brow_ridge", "lip_thickness", "mouth_width", "mouth_height", "face_length", "forehead_slope",
)
#: Seeded random low-frequency identity fields appended after :data:`SHAPE_NAMES`.
NUM_RANDOM_SHAPES = 9

_REGION = {name: i for i, name in enumerate(REGION_NAMES)}
_JOINT = {name: i for i, name in enumerate(JOINT_NAMES)}

# --- layout (metres) ----------------------------------------------------------------------
_ORIGIN = np.array([0.0, -0.01, -0.045])  # the skin is star-shaped around this point
_EYE = np.array([0.032, 0.031, 0.062])  # left eyeball centre (the right one is its mirror)
_EYEBALL_R = 0.012
_LID_R = 0.0132  # eyelid sphere around the eyeball: the eye-opening rim lies on it
_EYE_A, _EYE_UP, _EYE_DOWN, _EYE_TILT = 0.0105, 0.0048, 0.0038, 0.0008  # opening half-width, heights, tilt
_EYE_RINGS = ((0.0, 28), (0.0012, 28), (0.0028, 28), (0.005, 28), (0.008, 30))  # (offset from the rim, points)
_BROW_X = (0.013, 0.055)  # inner and outer end of the left brow
_BROW_ROWS = (-1.0, -0.75, 0.0, 0.75, 1.0)  # rows across the brow, in half-thicknesses (+0.9 mm on the outer two)
_MOUTH_Y, _MOUTH_W, _SLIT = -0.040, 0.024, 0.0006  # slit centre height, half-width, half-gap at the centre
_LIP_RIM_POINTS = 10  # rim points per half between the centre and a corner
#: Rings around the slit: (extra half-width, height above, depth below, spacing relative to the rim's).
_LIP_RINGS = ((0.0015, 0.003, 0.0035, 1.0), (0.0025, 0.0072, 0.0088, 1.2), (0.0045, 0.0092, 0.011, 1.4),
              (0.009, 0.0135, 0.0155, 1.7))
_LIP_BORDER_RING = 2  # lip rings up to this one (the rim is 0) are vermilion ("lips")
_JAW_HINGE = np.array([0.0, 0.004, -0.012])
_ROOT = np.array([0.0, -0.03, -0.012])
_NECK = np.array([0.0, -0.06, -0.02])
_NECK_CUT = -0.19  # flat bottom of the neck stump
_CHART_SPACING = 0.0036  # hexagonal grid over the face
_FACE_CHART = (0.054, -0.005, 0.09)  # half-width, centre height, half-height of the gridded face
_SPHERE_POINTS, _ZOOM = 1600, 0.6  # background directions, and how much denser they are on the face
_ZOOM_AXIS = np.array([0.0, -0.05, 1.0]) / np.hypot(0.05, 1.0)

# Mouth cavity rings behind the slit: (towards the midline / palate, back, width scale, flatten).
_CAVITY_RINGS = (
    (-0.0004, -0.0022, 0.98, 0.0),  # inner lip
    (0.0035, -0.0038, 0.95, 0.1),  # top of the teeth, hidden behind the lip
    (-0.0005, -0.0045, 0.93, 0.15),  # tooth edge
    (0.0040, -0.0085, 0.9, 0.3),  # behind the teeth
    (0.0105, -0.019, 0.82, 0.6),  # palate / floor
    (0.0110, -0.036, 0.68, 0.9),
    (0.0050, -0.047, 0.5, 1.0),  # back of the mouth
)
_CAVITY_REGIONS = ("lips", "teeth", "teeth", "mouth", "mouth", "mouth", "mouth")
#: How much of the lips' expression motion each cavity ring keeps (the cap keeps none).
_CAVITY_FOLLOW = (0.9, 0.75, 0.7, 0.5, 0.25, 0.1, 0.0)
_EYEBALL_RINGS_DEG = (6, 12, 18, 24, 30, 40, 55, 70, 90, 115, 145)  # polar angles from the gaze axis
_EYEBALL_SEGMENTS = 20
_PUPIL_DEG, _IRIS_DEG = 8.0, 27.0

# Vertex kinds, kept through merging and mirroring so features can be found again.
_BACKGROUND, _CHART, _EYE_RIM, _EYE_RING, _LIP_UPPER, _LIP_LOWER, _LIP_CORNER, _LIP_RING, _BROW = range(9)


# --- implicit solid -----------------------------------------------------------------------


def _ellipsoid(p: np.ndarray, centre, radii) -> np.ndarray:
    """Approximate signed distance to an ellipsoid (exact on its surface, smooth off it)."""
    radii = np.asarray(radii, float)
    q = (p - np.asarray(centre, float)) / radii
    k0 = np.sqrt(np.einsum("...i,...i->...", q, q))
    q /= radii
    k1 = np.sqrt(np.einsum("...i,...i->...", q, q))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _cone(p: np.ndarray, a, b, ra: float, rb: float) -> np.ndarray:
    """Distance to a capsule whose radius goes linearly from ``ra`` at ``a`` to ``rb`` at ``b``."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ab = b - a
    h = np.clip((p - a) @ ab / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - a - h[..., None] * ab, axis=-1) - (ra + (rb - ra) * h)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth union with a blend of width ``k``."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _mirror(p: np.ndarray) -> np.ndarray:
    """Fold x onto the left side so paired parts are written once."""
    q = p.copy()
    q[..., 0] = np.abs(q[..., 0])
    return q


def _nose(p: np.ndarray, pm: np.ndarray) -> np.ndarray:
    """Bridge, rounded tip and the two wings (``pm``: x folded)."""
    bridge = _cone(p, (0.0, 0.030, 0.078), (0.0, -0.004, 0.1035), 0.0058, 0.0072)
    tip = _ellipsoid(p, (0.0, -0.0085, 0.1005), (0.0105, 0.009, 0.0095))
    wings = _ellipsoid(pm, (0.0115, -0.0155, 0.089), (0.0072, 0.0065, 0.0072))
    return _smin(_smin(bridge, tip, 0.006), wings, 0.005)


def _skin_sdf(p: np.ndarray) -> np.ndarray:
    """Signed distance (approximate) of the head solid; negative inside."""
    pm = _mirror(p)
    d = _smin(_ellipsoid(p, (0.0, 0.030, -0.006), (0.074, 0.086, 0.094)),
              _ellipsoid(p, (0.0, -0.020, 0.020), (0.062, 0.070, 0.079)), 0.02)
    d = _smin(d, _ellipsoid(p, (0.0, -0.052, 0.022), (0.054, 0.04, 0.058)), 0.02)  # mandible
    d = _smin(d, _ellipsoid(p, (0.0, -0.076, 0.067), (0.02, 0.015, 0.018)), 0.014)  # chin
    d = _smin(d, _ellipsoid(pm, (0.037, -0.004, 0.056), (0.024, 0.02, 0.025)), 0.018)  # cheeks
    d = _smin(d, _ellipsoid(p, (0.0, 0.047, 0.068), (0.058, 0.011, 0.019)), 0.012)  # brow ridge
    d = _smin(d, _nose(p, pm), 0.006)
    lips = _smin(_ellipsoid(p, (0.0, -0.0345, 0.0855), (0.023, 0.0078, 0.0095)),
                 _ellipsoid(p, (0.0, -0.0470, 0.0840), (0.020, 0.0085, 0.0095)), 0.004)
    d = _smin(d, lips, 0.006)
    neck = _cone(p, (0.0, -0.26, -0.014), (0.0, -0.04, -0.014), 0.048, 0.048)
    d = _smin(d, neck, 0.02)
    socket = _ellipsoid(pm, _EYE + [0.0, 0.0, 0.016], (0.018, 0.0135, 0.016))
    d = -_smin(-d, socket, 0.004)
    d = _smin(d, np.linalg.norm(pm - _EYE, axis=-1) - _LID_R, 0.0015)
    return np.maximum(d, _NECK_CUT - p[..., 1])


def _ray_hits(dirs: np.ndarray, step: float = 0.0025, r_max: float = 0.32) -> np.ndarray:
    """Distance from :data:`_ORIGIN` to the outermost skin crossing along each direction."""
    radii = np.arange(r_max, 0.0, -step)
    f = _skin_sdf(_ORIGIN + dirs[:, None, :] * radii[None, :, None])
    inside = f < 0
    if not inside.any(axis=1).all():
        raise RuntimeError("a ray from the head's centre never enters the head")
    first = inside.argmax(axis=1)
    lo, hi = radii[first], radii[np.maximum(first - 1, 0)]
    for _ in range(16):
        mid = 0.5 * (lo + hi)
        out = _skin_sdf(_ORIGIN + dirs * mid[:, None]) >= 0
        hi, lo = np.where(out, mid, hi), np.where(out, lo, mid)
    return 0.5 * (lo + hi)


def _surface(dirs: np.ndarray) -> np.ndarray:
    return _ORIGIN + dirs * _ray_hits(dirs)[:, None]


def _aim(xy: np.ndarray, iterations: int = 6) -> np.ndarray:
    """Ray directions whose skin points have the given front-view (x, y)."""
    z = np.full(len(xy), 0.09)
    for _ in range(iterations):
        dirs = _unit(np.column_stack([xy, z]) - _ORIGIN)
        z = _surface(dirs)[:, 2]
    return _unit(np.column_stack([xy, z]) - _ORIGIN)


# --- sampling directions ------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _fibonacci(n: int) -> np.ndarray:
    """``n`` nearly evenly spread unit vectors."""
    i = np.arange(n) + 0.5
    y = 1.0 - 2.0 * i / n
    r = np.sqrt(1.0 - y * y)
    phi = i * np.pi * (3.0 - np.sqrt(5.0))
    return np.column_stack([r * np.cos(phi), y, r * np.sin(phi)])


def _zoom(d: np.ndarray, axis: np.ndarray, k: float) -> np.ndarray:
    """Conformal (Möbius) warp of unit vectors: spacing shrinks by ``k`` at ``axis`` and grows
    by ``1/k`` opposite it, staying isotropic, so one even set is dense on the face only."""
    c = np.clip(d @ axis, -1.0, 1.0)
    perp = d - c[:, None] * axis
    norm = np.linalg.norm(perp, axis=1, keepdims=True)
    e = perp / np.maximum(norm, 1e-12)
    theta = 2.0 * np.arctan(k * np.tan(np.arccos(c) / 2.0))
    return axis * np.cos(theta)[:, None] + e * np.sin(theta)[:, None]


def _background_dirs(count: int) -> np.ndarray:
    """Directions of the half x >= 0 (and exactly on x = 0) of a zoomed Fibonacci sphere."""
    s0 = np.sqrt(4.0 * np.pi / count)
    pts = _fibonacci(count)
    pts = pts[pts[:, 0] > 0.45 * s0]
    beta = np.linspace(0.0, 2.0 * np.pi, int(round(2.0 * np.pi / s0)), endpoint=False)
    mid = np.column_stack([np.zeros_like(beta), np.cos(beta), np.sin(beta)])
    dirs = _zoom(np.vstack([pts, mid]), _ZOOM_AXIS, _ZOOM)
    dirs[len(pts):, 0] = 0.0
    return dirs


def _chart_xy(spacing: float) -> np.ndarray:
    """Front-view (x, y) of a hexagonal grid over the face, x >= 0 half."""
    half_w, yc, half_h = _FACE_CHART
    row_step = spacing * np.sqrt(3.0) / 2.0
    rows = np.arange(-int(half_h / row_step), int(half_h / row_step) + 1)
    pts = []
    for j in rows:
        xs = np.arange((j % 2) * spacing / 2.0, half_w, spacing)
        y = yc + j * row_step
        xs = xs[(xs / half_w) ** 2 + ((y - yc) / half_h) ** 2 <= 1.0]
        pts.append(np.column_stack([xs, np.full_like(xs, y)]))
    return np.vstack(pts)


def _resample(curve: np.ndarray, n: int) -> np.ndarray:
    """``n + 1`` points evenly spaced by arc length along a densely sampled open curve."""
    seg = np.linalg.norm(np.diff(curve, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    target = np.linspace(0.0, s[-1], n + 1)
    return np.column_stack([np.interp(target, s, curve[:, 0]), np.interp(target, s, curve[:, 1])])


def _arc_length(curve: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(curve, axis=0), axis=1).sum())


def _eye_curve(t: np.ndarray, offset: float) -> np.ndarray:
    """Front-view almond around the left eye opening, grown outwards by ``offset``."""
    s = np.sin(t)
    height = np.where(s > 0, _EYE_UP, _EYE_DOWN) + offset
    x = _EYE[0] + (_EYE_A + offset) * np.cos(t)
    y = _EYE[1] + height * s * (0.75 + 0.25 * np.abs(s)) + _EYE_TILT * np.cos(t)
    return np.column_stack([x, y])


def _eye_features() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rim and rings of the left eye opening; the rim's corners are exact vertices."""
    dense_up = np.linspace(0.0, np.pi, 400)
    dense_down = np.linspace(np.pi, 2.0 * np.pi, 400)
    xy, kind, rings = [], [], []
    for k, (offset, n) in enumerate(_EYE_RINGS):
        if k == 0:
            up = _eye_curve(dense_up, 0.0)
            down = _eye_curve(dense_down, 0.0)
            n_up = int(round(n * _arc_length(up) / (_arc_length(up) + _arc_length(down))))
            ring = np.vstack([_resample(up, n_up)[:-1], _resample(down, n - n_up)[:-1]])
        else:
            closed = _eye_curve(np.concatenate([dense_up, dense_down[1:]]) + np.pi * (k % 2) / n, offset)
            ring = _resample(closed, n)[:-1]
        xy.append(ring)
        kind.append(np.full(len(ring), _EYE_RIM if k == 0 else _EYE_RING))
        rings.append(np.full(len(ring), k))
    return np.vstack(xy), np.concatenate(kind), np.concatenate(rings)


def _slit_gap(x: np.ndarray) -> np.ndarray:
    """Half the neutral opening between the lips: a thin lens, blunt at the corners."""
    return _SLIT * np.sqrt(np.clip(1.0 - (np.asarray(x) / _MOUTH_W) ** 2, 0.0, None))


def _lip_ring(extra: float, up: float, down: float, phi: np.ndarray) -> np.ndarray:
    x = (_MOUTH_W + extra) * np.cos(phi)
    y = _MOUTH_Y + np.where(phi > 0, up, down) * np.sin(phi)
    return np.column_stack([x, y])


def _mouth_features() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The lip line (one point per rim position: :func:`_split_slit` opens it later), the
    corner, and lip rings around them (x >= 0 half)."""
    x = _MOUTH_W * np.arange(_LIP_RIM_POINTS) / _LIP_RIM_POINTS
    xy = [np.column_stack([x, np.full_like(x, _MOUTH_Y)]), np.array([[_MOUTH_W, _MOUTH_Y]])]
    kind = [np.full(len(x), _LIP_UPPER), [_LIP_CORNER]]
    rings = [np.zeros(len(x) + 1, int)]
    spacing = _MOUTH_W / _LIP_RIM_POINTS
    phi = np.linspace(-np.pi / 2.0, np.pi / 2.0, 600)
    for k, (extra, up, down, growth) in enumerate(_LIP_RINGS):
        dense = _lip_ring(extra, up, down, phi)
        ring = _resample(dense, int(np.ceil(_arc_length(dense) / (spacing * growth))))
        ring[np.isclose(ring[:, 0], 0.0, atol=1e-9), 0] = 0.0
        xy.append(ring)
        kind.append(np.full(len(ring), _LIP_RING))
        rings.append(np.full(len(ring), k + 1))
    return np.vstack(xy), np.concatenate(kind).astype(int), np.concatenate(rings)


def _brow_centre(ax: np.ndarray) -> np.ndarray:
    """Height of the middle of the brow above |x| (an arch peaking two thirds out)."""
    u = np.clip((ax - _BROW_X[0]) / (_BROW_X[1] - _BROW_X[0]), 0.0, 1.0)
    return _EYE[1] + 0.0155 + 0.0045 * np.sin(np.pi * u ** 0.8)


def _brow_half(ax: np.ndarray) -> np.ndarray:
    """Half the brow's thickness: full at the inner end, tapering outwards."""
    u = np.clip((ax - _BROW_X[0]) / (_BROW_X[1] - _BROW_X[0]), 0.0, 1.0)
    return 0.0038 * (1.0 - 0.45 * u)


def _brow_features() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of points along the left brow, so its coloured band has clean edges; the outer
    rows sit just beyond the band and stay skin."""
    step = 0.0026
    x = np.arange(_BROW_X[0] - step, _BROW_X[1] + 1.5 * step, step)
    xy, rows = [], []
    for k, offset in enumerate(_BROW_ROWS):
        gap = 0.0009 * np.sign(offset) * (abs(offset) == 1.0)
        xs = x + (step / 2.0 if k % 2 else 0.0)
        xy.append(np.column_stack([xs, _brow_centre(xs) + offset * _brow_half(xs) + gap]))
        rows.append(np.full(len(xs), k))
    xy = np.vstack(xy)
    return xy, np.full(len(xy), _BROW), np.concatenate(rows)


# --- skin mesh ----------------------------------------------------------------------------


class _Skin:
    """The skin surface and where its features are: vertex kinds and ring numbers."""

    def __init__(self, verts: np.ndarray, kind: np.ndarray, ring: np.ndarray, faces: np.ndarray):
        self.verts, self.kind, self.ring, self.faces = verts, kind, ring, faces

    def loop(self, kinds: tuple[int, ...], centre: np.ndarray, side: float) -> np.ndarray:
        """Vertices of ``kinds`` on one side (sign of x), ordered by angle around ``centre``."""
        idx = np.flatnonzero(np.isin(self.kind, kinds) & (np.sign(self.verts[:, 0]) == side))
        rel = self.verts[idx, :2] - centre[:2]
        return idx[np.argsort(np.arctan2(rel[:, 1], rel[:, 0] * side))]


def _in_zones(xy: np.ndarray, margin: float) -> np.ndarray:
    """Inside the ring systems of the eyes or the lips, where only feature points may sit."""
    ax = np.abs(xy[:, 0])
    eye_off = _EYE_RINGS[-1][0] + margin
    eye = ((ax - _EYE[0]) / (_EYE_A + eye_off)) ** 2 + ((xy[:, 1] - _EYE[1]) / (_EYE_UP + eye_off)) ** 2 < 1.0
    extra, up, down, _ = _LIP_RINGS[-1]
    height = np.where(xy[:, 1] > _MOUTH_Y, up, down) + margin
    mouth = (ax / (_MOUTH_W + extra + margin)) ** 2 + ((xy[:, 1] - _MOUTH_Y) / height) ** 2 < 1.0
    return eye | mouth


def _half_points(detail: int) -> tuple[np.ndarray, ...]:
    """Directions, skin points, kinds and ring numbers of the x >= 0 half (features, then face
    grid, then background, each dropped where a finer set already covers the surface), and the
    eye rim."""
    eye_xy, eye_kind, eye_ring = _eye_features()
    mouth_xy, mouth_kind, mouth_ring = _mouth_features()
    brow_xy, brow_kind, brow_ring = _brow_features()
    feat_dirs = _aim(np.vstack([eye_xy, mouth_xy, brow_xy]))
    spacing = _CHART_SPACING / np.sqrt(detail)
    chart_xy = _chart_xy(spacing)
    chart_xy = chart_xy[~_in_zones(chart_xy, 0.4 * spacing)]
    chart_dirs = _unit(np.column_stack([chart_xy, np.full(len(chart_xy), 0.09)]) - _ORIGIN)
    bg_dirs = _background_dirs(_SPHERE_POINTS * detail)

    feat, chart, bg = _surface(feat_dirs), _surface(chart_dirs), _surface(bg_dirs)
    keep_chart = cKDTree(feat).query(chart)[0] > 0.7 * spacing
    fine = np.vstack([feat, chart[keep_chart]])
    bg_spacing = cKDTree(bg).query(bg, k=2)[0][:, 1]
    front = bg[:, 2] > 0.03
    keep_bg = (cKDTree(fine).query(bg)[0] > 0.75 * bg_spacing) & ~(front & _in_zones(bg[:, :2], 0.0))
    dirs = np.vstack([feat_dirs, chart_dirs[keep_chart], bg_dirs[keep_bg]])
    points = np.vstack([feat, chart[keep_chart], bg[keep_bg]])
    kind = np.concatenate([eye_kind, mouth_kind, brow_kind, np.full(keep_chart.sum(), _CHART),
                           np.full(keep_bg.sum(), _BACKGROUND)])
    ring = np.concatenate([eye_ring, mouth_ring, brow_ring, np.full(keep_chart.sum() + keep_bg.sum(), -1)])
    return dirs, points, kind, ring, np.arange(_EYE_RINGS[0][1])


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd test of 2D points against a closed polygon."""
    a, b = polygon, np.roll(polygon, -1, axis=0)
    px, py = points[:, None, 0], points[:, None, 1]
    crosses = (a[:, 1] > py) != (b[:, 1] > py)
    t = (py - a[:, 1]) / np.where(a[:, 1] == b[:, 1], 1.0, b[:, 1] - a[:, 1])
    return (crosses & (px < a[:, 0] + t * (b[:, 0] - a[:, 0]))).sum(axis=1) % 2 == 1


def _triangulate_half(dirs: np.ndarray, eye_loop: np.ndarray) -> np.ndarray:
    """Delaunay of the half's stereographic image (it keeps circles, so this is the spherical
    Delaunay), wound counter-clockwise seen from outside, without the slivers along the
    midline and the faces filling the eye opening."""
    plane = dirs[:, 1:] / (1.0 + dirs[:, :1])
    tri = Delaunay(plane).simplices
    tri = tri[~(dirs[tri, 0] == 0.0).all(axis=1)]
    e1, e2 = plane[tri[:, 1]] - plane[tri[:, 0]], plane[tri[:, 2]] - plane[tri[:, 0]]
    ccw = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] > 0
    tri = np.where(ccw[:, None], tri, tri[:, ::-1])
    in_eye = np.isin(tri, eye_loop).all(axis=1) & _inside(plane[tri].mean(axis=1), plane[eye_loop])
    return tri[~in_eye]


def _split_slit(points: np.ndarray, kind: np.ndarray, ring: np.ndarray, tri: np.ndarray):
    """Open the lip line into a slit: each line vertex gets a lower-lip twin used by the faces
    below the line, and both are moved onto their rims.  Triangulating the line first makes
    the rims exact mesh edges however thin the neutral slit is."""
    line = np.flatnonzero(kind == _LIP_UPPER)
    twin = np.arange(len(points))
    twin[line] = len(points) + np.arange(len(line))
    other = np.where(np.isin(tri, line), np.nan, points[tri, 1])
    below = np.nanmean(other, axis=1) < _MOUTH_Y
    tri = np.where(below[:, None], twin[tri], tri)
    x = points[line, 0]
    points = np.vstack([points, points[line]])
    points[line] = _surface(_aim(np.column_stack([x, _MOUTH_Y + _slit_gap(x)])))
    points[twin[line]] = _surface(_aim(np.column_stack([x, _MOUTH_Y - _slit_gap(x)])))
    kind = np.concatenate([kind, np.full(len(line), _LIP_LOWER)])
    return points, kind, np.concatenate([ring, ring[line]]), tri


def _mirror_half(points: np.ndarray, kind: np.ndarray, ring: np.ndarray, tri: np.ndarray) -> _Skin:
    """The half and its mirror image (winding reversed) as one mesh."""
    side = np.flatnonzero(points[:, 0] != 0.0)
    image = np.arange(len(points))
    image[side] = len(points) + np.arange(len(side))
    all_points = np.vstack([points, points[side] * [-1.0, 1.0, 1.0]])
    faces = np.vstack([tri, image[tri][:, ::-1]])
    used = np.unique(faces)
    remap = np.full(len(all_points), -1)
    remap[used] = np.arange(len(used))
    kinds = np.concatenate([kind, kind[side]])[used]
    rings = np.concatenate([ring, ring[side]])[used]
    return _Skin(all_points[used], kinds, rings, remap[faces])


def _build_skin(detail: int) -> _Skin:
    dirs, points, kind, ring, eye_loop = _half_points(detail)
    tri = _triangulate_half(dirs, eye_loop)
    return _mirror_half(*_split_slit(points, kind, ring, tri))


# --- inner parts: mouth cavity and eyeballs ------------------------------------------------


class _Mesh:
    """The assembled head: skin, then the mouth tube, then the left and right eyeballs."""

    def __init__(self, skin: _Skin):
        self.skin = skin
        self.n_skin = len(skin.verts)
        self.loop, self.side = _mouth_loop(skin)
        cavity, cavity_faces, self.rings, self.cap = _mouth_tube(skin, self.loop, self.side)
        eyes = [_eyeball(sign) for sign in (1.0, -1.0)]
        parts = [skin.verts, cavity] + [e[0] for e in eyes]
        offsets = np.cumsum([0] + [len(p) for p in parts])
        self.verts = np.vstack(parts)
        self.eye_index = [np.arange(offsets[2 + i], offsets[3 + i]) for i in range(2)]
        self.faces = np.vstack([skin.faces, cavity_faces] + [e[1] + offsets[2 + i] for i, e in enumerate(eyes)])
        self.region = np.concatenate([_skin_regions(skin), _cavity_regions(self.rings, len(cavity)),
                                      eyes[0][2], eyes[1][2]])
        self.eye_rims = [skin.loop((_EYE_RIM,), _EYE * [sign, 1.0, 1.0], sign) for sign in (1.0, -1.0)]


def _mouth_loop(skin: _Skin) -> tuple[np.ndarray, np.ndarray]:
    """Slit rim in order (right corner, upper lip to the left corner, lower lip back) and the
    side of each vertex (+1 upper lip, -1 lower lip, 0 corner)."""
    x = skin.verts[:, 0]
    upper = np.flatnonzero(skin.kind == _LIP_UPPER)
    lower = np.flatnonzero(skin.kind == _LIP_LOWER)
    corners = np.flatnonzero(skin.kind == _LIP_CORNER)
    upper, lower, corners = upper[np.argsort(x[upper])], lower[np.argsort(-x[lower])], corners[np.argsort(x[corners])]
    loop = np.concatenate([corners[:1], upper, corners[1:], lower])
    side = np.concatenate([[0.0], np.ones(len(upper)), [0.0], -np.ones(len(lower))])
    return loop, side


def _mouth_tube(skin: _Skin, loop: np.ndarray, side: np.ndarray):
    """Rings of vertices behind the slit (inner lip, teeth, cavity) closed by a cap; faces are
    wound to continue the skin's orientation through the slit."""
    rim = skin.verts[loop]
    profile = np.clip(1.0 - (rim[:, 0] / _MOUTH_W) ** 2, 0.0, None)
    front = rim[:, 2].max()
    rings = [loop]
    verts = []
    for k, (dy, dz, width, flat) in enumerate(_CAVITY_RINGS):
        ring = np.column_stack([rim[:, 0] * width, rim[:, 1] + side * dy * profile,
                                (1.0 - flat) * rim[:, 2] + flat * front + dz])
        verts.append(ring)
        rings.append(len(skin.verts) + k * len(loop) + np.arange(len(loop)))
    cap = len(skin.verts) + len(_CAVITY_RINGS) * len(loop)
    verts.append([[0.0, _MOUTH_Y, front + _CAVITY_RINGS[-1][1] - 0.003]])
    faces = []
    for a, b in zip(rings[:-1], rings[1:]):
        a1, b1 = np.roll(a, -1), np.roll(b, -1)
        faces += [np.column_stack([a, a1, b1]), np.column_stack([a, b1, b])]
    last = rings[-1]
    faces.append(np.column_stack([last, np.roll(last, -1), np.full(len(last), cap)]))
    faces = np.vstack(faces)
    if _shares_direction(skin.faces, loop[0], loop[1]):
        faces = faces[:, ::-1]
    return np.vstack(verts), faces, rings[1:], cap


def _shares_direction(faces: np.ndarray, a: int, b: int) -> bool:
    """Whether some face runs along the edge a -> b (the tube must run it b -> a)."""
    nxt = np.roll(faces, -1, axis=1)
    return bool(((faces == a) & (nxt == b)).any())


def _eyeball(sign: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A sphere whose poles are on the gaze axis (+z), with iris and pupil discs around the
    front pole; the right eye (sign -1) is the mirror image of the left."""
    polar = np.deg2rad(np.array(_EYEBALL_RINGS_DEG, float))
    az = np.linspace(0.0, 2.0 * np.pi, _EYEBALL_SEGMENTS, endpoint=False)
    ring = np.stack([np.sin(polar)[:, None] * np.cos(az), np.sin(polar)[:, None] * np.sin(az),
                     np.cos(polar)[:, None] * np.ones_like(az)], axis=-1).reshape(-1, 3)
    unit = np.vstack([[0.0, 0.0, 1.0], ring, [0.0, 0.0, -1.0]])
    n, m = len(polar), _EYEBALL_SEGMENTS
    j = np.arange(m)
    faces = [np.column_stack([np.zeros(m, int), 1 + j, 1 + (j + 1) % m])]
    for i in range(n - 1):
        a, b = 1 + i * m + j, 1 + (i + 1) * m + j
        a1, b1 = 1 + i * m + (j + 1) % m, 1 + (i + 1) * m + (j + 1) % m
        faces += [np.column_stack([a, b, b1]), np.column_stack([a, b1, a1])]
    back = 1 + n * m
    faces.append(np.column_stack([1 + (n - 1) * m + j, np.full(m, back), 1 + (n - 1) * m + (j + 1) % m]))
    faces = np.vstack(faces)
    verts = _EYE + _EYEBALL_R * unit
    if sign < 0:
        verts, faces = verts * [-1.0, 1.0, 1.0], faces[:, ::-1]
    angle = np.degrees(np.arccos(np.clip(unit[:, 2], -1.0, 1.0)))
    region = np.where(angle < _PUPIL_DEG, _REGION["pupil"], np.where(angle < _IRIS_DEG, _REGION["iris"],
                                                                       _REGION["sclera"]))
    return verts, faces, region.astype(np.uint8)


def _skin_regions(skin: _Skin) -> np.ndarray:
    """Brows, eyelids and lips by the feature rows and rings they were built from."""
    region = np.full(len(skin.verts), _REGION["skin"], np.uint8)
    on_brow = (skin.verts[:, 0] != 0) & (np.abs(np.abs(skin.verts[:, 0]) - np.mean(_BROW_X)) <= np.ptp(_BROW_X) / 2)
    region[(skin.kind == _BROW) & (np.abs(np.take(_BROW_ROWS, skin.ring)) < 1.0) & on_brow] = _REGION["brow"]
    lid = (skin.kind == _EYE_RIM) | ((skin.kind == _EYE_RING) & (skin.ring <= 2))
    region[lid] = _REGION["eyelid"]
    lips = np.isin(skin.kind, (_LIP_UPPER, _LIP_LOWER, _LIP_CORNER)) | (
        (skin.kind == _LIP_RING) & (skin.ring <= _LIP_BORDER_RING))
    region[lips] = _REGION["lips"]
    return region


def _cavity_regions(rings: list[np.ndarray], n: int) -> np.ndarray:
    """Inner lip, teeth, then mouth (the cap too)."""
    region = np.full(n, _REGION["mouth"], np.uint8)
    start = rings[0][0]
    for ring, name in zip(rings, _CAVITY_REGIONS):
        region[ring - start] = _REGION[name]
    return region


# --- smooth weight fields -----------------------------------------------------------------


def _step(t: np.ndarray) -> np.ndarray:
    """Smoothstep from 0 (t <= 0) to 1 (t >= 1)."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gauss(p: np.ndarray, centre, sigma) -> np.ndarray:
    """An axis-aligned Gaussian bump (peak 1)."""
    return np.exp(-0.5 * (((p - np.asarray(centre, float)) / np.asarray(sigma, float)) ** 2).sum(axis=-1))


def _pair(p: np.ndarray, centre, sigma) -> np.ndarray:
    """A Gaussian on each side (the centre's x is mirrored)."""
    return _gauss(_mirror(p), centre, sigma)


def _one_side(p: np.ndarray, centre, sigma, sign: float) -> np.ndarray:
    """A Gaussian on the subject's left (sign +1) or right (-1) side."""
    return _gauss(p, np.asarray(centre, float) * [sign, 1.0, 1.0], sigma)


def _along(weight: np.ndarray, vector) -> np.ndarray:
    """A displacement ``vector`` scaled per vertex by ``weight``."""
    return weight[:, None] * np.asarray(vector, float)


def _lip_side(p: np.ndarray) -> np.ndarray:
    """+1 above the lip line, -1 below it; sharp across the slit, soft beyond the corners where
    the boundary rises towards the jaw hinge."""
    beyond = np.maximum(np.abs(p[:, 0]) - _MOUTH_W, 0.0)
    boundary = _MOUTH_Y + 0.9 * beyond
    width = 0.0002 + 0.35 * beyond
    return np.tanh((p[:, 1] - boundary) / width)


def _lips(p: np.ndarray, reach: float = 1.6) -> np.ndarray:
    """1 on the lips, fading to 0 at ``reach`` times their size."""
    height = np.where(p[:, 1] > _MOUTH_Y, _LIP_RINGS[1][1], _LIP_RINGS[1][2])
    rho = np.hypot(p[:, 0] / (_MOUTH_W + _LIP_RINGS[1][0]), (p[:, 1] - _MOUTH_Y) / height)
    return _step((reach - rho) / (reach - 1.0)) * _step((p[:, 2] - 0.05) / 0.02)


def _mouth_area(p: np.ndarray) -> np.ndarray:
    """1 around the mouth (lips and the skin around them), fading out over the cheeks."""
    rho = np.hypot(p[:, 0] / 0.036, (p[:, 1] - _MOUTH_Y) / 0.024)
    return _step((1.5 - rho) / 0.8) * _step((p[:, 2] - 0.04) / 0.02)


def _above_lids(p: np.ndarray) -> np.ndarray:
    """0 on the eyelids and below, 1 on the brows: brow motion leaves the lid rims alone."""
    return _step((p[:, 1] - _EYE[1] - 0.0065) / 0.006)


def _near_eye(p: np.ndarray, inner: float = 0.016, outer: float = 0.028) -> np.ndarray:
    """1 within ``inner`` of either eyeball centre, 0 beyond ``outer``."""
    d = np.linalg.norm(_mirror(p) - _EYE, axis=1)
    return _step((outer - d) / (outer - inner))


def _jaw_weight(p: np.ndarray) -> np.ndarray:
    """Share of the jaw joint: below the lip line and in front of the neck, sharp across the
    slit but half-and-half at its corners (the mouth opens into a lens), smooth over the
    cheeks and under the chin."""
    rel = p - _JAW_HINGE
    angle = np.degrees(np.arctan2(rel[:, 2], -rel[:, 1]))  # 0 straight down, 90 forwards
    neck = _step((angle - 12.0) / 26.0) * _step((p[:, 1] + 0.125) / 0.035)
    corner = _pair(p, (_MOUTH_W, _MOUTH_Y, 0.085), (0.006, 0.006, 0.02))
    return (0.5 * (1.0 - _lip_side(p)) * (1.0 - corner) + 0.5 * corner) * neck


# --- joints, skinning, pose correctives ---------------------------------------------------


def _convex_weights(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to one whose weighted mean of ``points`` is exactly
    ``target``, otherwise as even as possible (so the joint follows its whole region): the
    least-change solution from uniform, dropping points that would get negative weight."""
    active = np.ones(len(points), bool)
    rhs = np.append(target, 1.0)
    for _ in range(len(points)):
        a = np.vstack([points[active].T, np.ones(active.sum())])
        w = np.full(active.sum(), 1.0 / active.sum())
        w = w + a.T @ np.linalg.solve(a @ a.T, rhs - a @ w)
        if (w >= 0.0).all():
            weights = np.zeros(len(points))
            weights[active] = w
            return weights
        active[np.flatnonzero(active)[w < 0.0]] = False
        if active.sum() < 4:
            break
    raise RuntimeError(f"joint target {target} lies outside the hull of its vertices")


def _joint_regressor(mesh: _Mesh) -> np.ndarray:
    """(J,V) convex rows: root and neck from rings of skin at their heights, the jaw from the
    skin around both hinges, each eye from its eyeball."""
    skin = mesh.verts[: mesh.n_skin]
    y, z = skin[:, 1], skin[:, 2]
    groups = {
        "global": (np.flatnonzero(np.abs(y - _ROOT[1]) < 0.008), _ROOT),
        "neck": (np.flatnonzero(np.abs(y - _NECK[1]) < 0.008), _NECK),
        "jaw": (np.flatnonzero((np.abs(y - _JAW_HINGE[1]) < 0.015) & (np.abs(z - _JAW_HINGE[2]) < 0.02)
                               & (np.abs(skin[:, 0]) > 0.04)), _JAW_HINGE),
        "eye_left": (mesh.eye_index[0], _EYE),
        "eye_right": (mesh.eye_index[1], _EYE * [-1.0, 1.0, 1.0]),
    }
    regressor = np.zeros((len(JOINT_NAMES), len(mesh.verts)))
    for name, (idx, target) in groups.items():
        regressor[_JOINT[name], idx] = _convex_weights(mesh.verts[idx], np.asarray(target, float))
    return regressor


def _propagate(mesh: _Mesh, skin_disp: np.ndarray, follow: tuple[float, ...] = _CAVITY_FOLLOW) -> np.ndarray:
    """(V,3) displacement: the skin's, the tube rings following their lip rim by ``follow``,
    nothing on the cap and the eyeballs."""
    out = np.zeros((len(mesh.verts), 3))
    out[: mesh.n_skin] = skin_disp
    rim = skin_disp[mesh.loop]
    for ring, share in zip(mesh.rings, follow):
        out[ring] = share * rim
    return out


def _skinning_weights(mesh: _Mesh) -> np.ndarray:
    """(V,J) rows summing to one: neck joint for the head, jaw below the lips, global at the
    bottom of the neck stump, each eyeball rigidly on its eye joint."""
    p = mesh.verts
    jaw_skin = _jaw_weight(p[: mesh.n_skin])
    jaw = _propagate(mesh, np.repeat(jaw_skin[:, None], 3, axis=1), (1.0,) * len(mesh.rings))[:, 0]
    jaw[mesh.cap] = 0.5
    body = _step((-0.14 - p[:, 1]) / 0.05)
    weights = np.zeros((len(p), len(JOINT_NAMES)))
    weights[:, _JOINT["global"]] = body
    weights[:, _JOINT["jaw"]] = (1.0 - body) * jaw
    weights[:, _JOINT["neck"]] = (1.0 - body) * (1.0 - jaw)
    for name, idx in zip(("eye_left", "eye_right"), mesh.eye_index):
        weights[idx] = 0.0
        weights[idx, _JOINT[name]] = 1.0
    return weights


def _pose_correctives(mesh: _Mesh) -> np.ndarray:
    """(V,3,36) FLAME pose blendshapes; only the jaw's opening (sin of its x rotation, feature
    ``9 * (jaw - 1) + 7``) has one: the lips part further than the teeth (so the teeth show),
    the cheeks hollow, the lower lip and chin round forwards."""
    p = mesh.verts[: mesh.n_skin]
    side, reach = _lip_side(p), _lips(p, 2.4)
    disp = (_along(np.sign(p[:, 0]) * _pair(p, (0.034, -0.045, 0.06), (0.012, 0.015, 0.03)), [-0.006, 0.0, 0.0])
            + _along(reach * 0.5 * (1.0 + side), [0.0, 0.007, 0.0])
            + _along(reach * 0.5 * (1.0 - side), [0.0, -0.004, 0.005])
            + _along(_gauss(p, (0.0, -0.075, 0.065), (0.015, 0.012, 0.03)), [0.0, 0.0, 0.003]))
    posedirs = np.zeros((len(mesh.verts), 3, 9 * (len(JOINT_NAMES) - 1)))
    inner_lip_only = (1.0,) + (0.0,) * (len(mesh.rings) - 1)
    posedirs[:, :, 9 * (_JOINT["jaw"] - 1) + 7] = _propagate(mesh, disp, inner_lip_only)
    return posedirs


# --- expression basis ---------------------------------------------------------------------


class _Lids:
    """One eye's lids in angles around its eyeball centre: elevation of the upper and lower rim
    at each horizontal offset, and how much each skin vertex belongs to either lid."""

    def __init__(self, mesh: _Mesh, which: int):
        self.sign = 1.0 if which == 0 else -1.0
        self.centre = _EYE * [self.sign, 1.0, 1.0]
        self.p = mesh.verts[: mesh.n_skin]
        qx, elev = self._angles(mesh.verts[mesh.eye_rims[which]])
        lo, hi = qx.argmin(), qx.argmax()
        chord = np.interp(qx, [qx[lo], qx[hi]], [elev[lo], elev[hi]])
        up, down = elev >= chord - 1e-9, elev <= chord + 1e-9
        self.rims = [(qx[m][np.argsort(qx[m])], elev[m][np.argsort(qx[m])]) for m in (up, down)]
        self.span = (qx[lo], qx[hi])
        self.q, self.e = self._angles(self.p)
        top, bottom = self.top(self.q), self.bottom(self.q)
        beyond = np.maximum(np.maximum(self.span[0] - self.q, self.q - self.span[1]), 0.0)
        near = (np.linalg.norm(self.p - self.centre, axis=1) < 0.026) & (self.p[:, 2] > self.centre[2] - 0.002)
        gate = near * _step((0.006 - beyond) / 0.006)
        self.upper = gate * (self.e >= top - 1e-9) * _step((top + 0.5 - self.e) / 0.5)
        self.lower = gate * (self.e <= bottom + 1e-9) * _step((self.e - bottom + 0.4) / 0.4)

    def _angles(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Horizontal offset (positive outwards) and elevation angle around the eyeball centre."""
        q = p - self.centre
        return q[:, 0] * self.sign, np.arctan2(q[:, 1], q[:, 2])

    def top(self, q: np.ndarray) -> np.ndarray:
        """Elevation of the upper rim at horizontal offsets ``q``."""
        return np.interp(q, *self.rims[0])

    def bottom(self, q: np.ndarray) -> np.ndarray:
        """Elevation of the lower rim at horizontal offsets ``q``."""
        return np.interp(q, *self.rims[1])

    def turn(self, angle: np.ndarray, swell: np.ndarray | float = 0.0) -> np.ndarray:
        """Displacement of every skin vertex turned by ``angle`` (rad, positive = down) about the
        eyeball's horizontal axis and pushed out by ``swell`` (relative), so lids glide over the eye."""
        q = self.p - self.centre
        c, s = np.cos(angle), np.sin(angle)
        turned = np.column_stack([q[:, 0], q[:, 1] * c - q[:, 2] * s, q[:, 1] * s + q[:, 2] * c])
        return self.centre + turned * np.reshape(1.0 + np.asarray(swell, float), (-1, 1)) - self.p

    def close(self) -> np.ndarray:
        """Upper lid down to just past the lower rim (less so towards the corners) and a little
        in front of it, so the closed lid hides the whole eyeball."""
        mid, half = 0.5 * (self.span[0] + self.span[1]), 0.5 * (self.span[1] - self.span[0])
        middle = np.clip(1.0 - ((self.q - mid) / half) ** 2, 0.0, None)
        angle = (self.top(self.q) - self.bottom(self.q) + 0.07 * middle) * self.upper
        return self.turn(angle, 0.06 * self.upper)


def _expression_fields(mesh: _Mesh) -> dict[str, np.ndarray]:
    """Skin displacement (n_skin,3) of each blendshape at activation 1."""
    p = mesh.verts[: mesh.n_skin]
    x, y = p[:, 0], p[:, 1]
    side = _lip_side(p)
    lips, around = _lips(p), _mouth_area(p)
    upper, lower = 0.5 * (1.0 + side), 0.5 * (1.0 - side)
    wide_upper, wide_lower = _lips(p, 2.4) * upper, _lips(p, 2.4) * lower
    gap = _slit_gap(np.abs(x))
    lids = [_Lids(mesh, 0), _Lids(mesh, 1)]
    brow = _above_lids(p) * _step((p[:, 2] - 0.04) / 0.02)
    inner_brow = brow * _pair(p, (0.018, 0.05, 0.08), (0.016, 0.025, 0.05))
    outer_brow = {s: brow * _one_side(p, (0.046, 0.05, 0.07), (0.012, 0.03, 0.05), s) for s in (1.0, -1.0)}
    corner = {s: _one_side(p, (_MOUTH_W, _MOUTH_Y, 0.085), (0.011, 0.011, 0.025), s) for s in (1.0, -1.0)}
    cheek = {s: _one_side(p, (0.036, -0.002, 0.07), (0.014, 0.013, 0.03), s) for s in (1.0, -1.0)}
    puff = _pair(p, (0.040, -0.032, 0.06), (0.014, 0.016, 0.03))
    pressed = gap + 0.25 * np.clip(np.abs(y - _MOUTH_Y) - gap, 0.0, 0.008)  # lips close, then thin
    jaw = _jaw_weight(p)
    return {
        "lips_pucker": _along(lips, [0.0, 0.0, 0.0045]) + _along(lips * x, [-0.18, 0.0, 0.0]),
        "lips_funnel": _along(lips, [0.0, 0.0, 0.0035]) + _along(lips * x, [-0.12, 0.0, 0.0])
        + _along(lips * side * np.clip(1.0 - (x / _MOUTH_W) ** 2, 0.0, None), [0.0, 0.0022, 0.0]),
        "lips_stretch": _along(around * x, [0.16, 0.0, 0.0])
        + _along(around * (x / _MOUTH_W) ** 2, [0.0, 0.0, -0.0015]),
        "lips_press": _along(lips * side * pressed, [0.0, -1.0, 0.0]) + _along(lips, [0.0, 0.0, -0.0012]),
        "upper_lip_raise": _along(wide_upper, [0.0, 0.0032, 0.0005]),
        "lower_lip_depress": _along(wide_lower, [0.0, -0.0032, 0.001]),
        "mouth_corner_up_left": _along(corner[1.0], [0.0015, 0.0042, -0.0012]),
        "mouth_corner_up_right": _along(corner[-1.0], [-0.0015, 0.0042, -0.0012]),
        "mouth_corner_down_left": _along(corner[1.0], [0.0005, -0.0038, -0.0003]),
        "mouth_corner_down_right": _along(corner[-1.0], [-0.0005, -0.0038, -0.0003]),
        "cheek_raise_left": _along(cheek[1.0], [0.0, 0.0028, 0.0012]) + lids[0].turn(-0.07 * lids[0].lower),
        "cheek_raise_right": _along(cheek[-1.0], [0.0, 0.0028, 0.0012]) + lids[1].turn(-0.07 * lids[1].lower),
        "cheek_puff": _along(puff, [0.0, -0.0004, 0.0027]) + _along(puff * np.sign(x), [0.0036, 0.0, 0.0]),
        "nose_wrinkle": _along(_pair(p, (0.011, -0.012, 0.09), (0.008, 0.009, 0.02)), [0.0, 0.0022, 0.0003])
        + _along(_gauss(p, (0.0, 0.02, 0.08), (0.012, 0.01, 0.02)), [0.0, -0.0012, 0.0005])
        + _along(wide_upper, [0.0, 0.0008, 0.0]),
        "brow_inner_raise": _along(brow * _pair(p, (0.016, 0.05, 0.08), (0.012, 0.03, 0.05)), [0.0, 0.0045, 0.0]),
        "brow_outer_raise_left": _along(outer_brow[1.0], [0.0, 0.0045, 0.0]),
        "brow_outer_raise_right": _along(outer_brow[-1.0], [0.0, 0.0045, 0.0]),
        "brow_lower": _along(inner_brow + 0.6 * (outer_brow[1.0] + outer_brow[-1.0]), [0.0, -0.0035, 0.0008])
        + _along(inner_brow * np.sign(x), [-0.0012, 0.0, 0.0]),
        "eyelid_close_left": lids[0].close(),
        "eyelid_close_right": lids[1].close(),
        "eye_wide": sum(lid.turn(-0.15 * lid.upper + 0.05 * lid.lower) for lid in lids),
        "lower_lid_raise": sum(lid.turn(-0.12 * lid.lower) for lid in lids),
        "jaw_forward": _along(jaw, [0.0, 0.0, 0.0035]),
        "jaw_sideways": _along(jaw, [0.0035, 0.0, 0.0]),
        "chin_raise": _along(_gauss(p, (0.0, -0.072, 0.07), (0.016, 0.012, 0.03)), [0.0, 0.0025, 0.001])
        + _along(lips * lower, [0.0, 0.0, 0.0015]) + _along(lips * lower * gap, [0.0, 1.0, 0.0]),
    }


def _expression_basis(mesh: _Mesh) -> np.ndarray:
    fields = _expression_fields(mesh)
    return np.stack([_propagate(mesh, fields[name]) for name in EXPRESSION_NAMES], axis=2)


# --- identity basis -----------------------------------------------------------------------


def _identity_fields(p: np.ndarray) -> list[np.ndarray]:
    """Displacements (N,3) at points ``p`` of the named identity components, about one
    standard deviation each, in :data:`SHAPE_NAMES` order."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    zero = np.zeros_like(x)
    side = np.sign(x)
    outward = _unit(np.column_stack([side * 0.9, zero, np.full_like(x, 0.45)]))
    lips, side_of_lip = _lips(p), _lip_side(p)
    eyes = _near_eye(p, 0.018, 0.03)
    brow = _above_lids(p)
    return [
        np.column_stack([0.035 * x, zero, zero]),
        np.column_stack([zero, 0.03 * (y + 0.01), zero]),
        np.column_stack([zero, zero, 0.03 * z]),
        0.04 * (p - [0.0, 0.0, -0.01]) * _step((y - 0.02) / 0.05)[:, None],
        np.column_stack([0.07 * x * _step((-0.02 - y) / 0.05) * _step((y + 0.125) / 0.04), zero, zero]),
        _along(_gauss(p, (0.0, -0.08, 0.05), (0.025, 0.018, 0.04)), [0.0, -0.004, 0.0]),
        _along(_gauss(p, (0.0, -0.08, 0.05), (0.025, 0.018, 0.04)), [0.0, 0.0, 0.004]),
        _along(_gauss(p, (0.0, -0.009, 0.1), (0.012, 0.012, 0.015)), [0.0, -0.002, 0.0035]),
        _along(_gauss(p, (0.0, -0.012, 0.09), (0.014, 0.012, 0.02)) * x, [0.25, 0.0, 0.0]),
        _along(_gauss(p, (0.0, 0.012, 0.09), (0.007, 0.014, 0.02)), [0.0, 0.0, 0.003]),
        0.0035 * outward * _pair(p, (0.042, -0.025, 0.05), (0.015, 0.02, 0.035))[:, None],
        0.0035 * outward * _pair(p, (0.045, 0.008, 0.055), (0.013, 0.01, 0.03))[:, None],
        _along(eyes * side, [0.0022, 0.0, 0.0]),
        _along(eyes, [0.0, 0.0018, 0.0]),
        _along(brow * np.exp(-0.5 * ((y - _brow_centre(np.abs(x))) / 0.008) ** 2), [0.0, 0.0025, 0.0]),
        _along(brow * _pair(p, (0.035, 0.047, 0.08), (0.02, 0.008, 0.03)), [0.0, 0.0, 0.0025]),
        _along(lips, [0.0, 0.0, 0.0015])
        + _along(lips * side_of_lip * np.clip(np.abs(y - _MOUTH_Y) / 0.008, 0.0, 1.0), [0.0, 0.0012, 0.0]),
        _along(_mouth_area(p) * x, [0.08, 0.0, 0.0]),
        _along(_lips(p, 3.0), [0.0, 0.0025, 0.0]),
        np.column_stack([zero, -0.004 * _step((-0.005 - y) / 0.06), zero]),
        _along(_step((y - 0.045) / 0.05) * _step(z / 0.05), [0.0, 0.0, 0.005]),
    ]


def _random_fields(p: np.ndarray, anchors: np.ndarray, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Smooth radial bumps around random ``anchors``, most of them mirrored: identity detail no
    named component covers."""
    radial = _unit(p - _ORIGIN)
    picks_all = rng.choice(len(anchors), size=(count, 4))
    fields = []
    for picks in picks_all:
        bumps = np.zeros(len(p))
        for centre in anchors[picks]:
            amp, sigma = rng.normal(0.0, 0.0018), rng.uniform(0.02, 0.04)
            bumps += amp * _gauss(p, centre, sigma)
            if rng.random() < 0.7:
                bumps += amp * _gauss(p, centre * [-1.0, 1.0, 1.0], sigma)
        fields.append(radial * bumps[:, None])
    return fields


def _identity_basis(mesh: _Mesh, rng: np.random.Generator) -> np.ndarray:
    """(V,3,S): fields on skin and mouth tube; near each eye they blend into the field's value
    at the eyeball centre, which moves the eyeball rigidly, so lids and eyes stay together."""
    n_head = mesh.eye_index[0][0]
    head = mesh.verts[:n_head]
    centres = np.vstack([_EYE, _EYE * [-1.0, 1.0, 1.0]])
    named = _identity_fields(np.vstack([head, centres]))
    random = _random_fields(np.vstack([head, centres]), head[: mesh.n_skin], rng, NUM_RANDOM_SHAPES)
    rigid = _near_eye(head)[:, None]
    nearest = (head[:, 0] < 0).astype(int)
    basis = np.zeros((len(mesh.verts), 3, len(named) + len(random)))
    for k, field in enumerate(named + random):
        at_centre = field[n_head:]
        basis[:n_head, :, k] = (1.0 - rigid) * field[:n_head] + rigid * at_centre[nearest]
        for i, idx in enumerate(mesh.eye_index):
            basis[idx, :, k] = at_centre[i]
    return basis


# --- landmark embedding -------------------------------------------------------------------


def _front_hits(verts: np.ndarray, faces: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face index and barycentric coordinates of the front-most surface point seen straight on
    at each front-view (x, y)."""
    tri = verts[faces]
    a, e1, e2 = tri[:, 0, :2], tri[:, 1, :2] - tri[:, 0, :2], tri[:, 2, :2] - tri[:, 0, :2]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = np.abs(det) > 1e-14
    safe = np.where(ok, det, 1.0)
    face_idx, bary = [], []
    for point in xy:
        r = point - a
        u = (r[:, 0] * e2[:, 1] - r[:, 1] * e2[:, 0]) / safe
        v = (e1[:, 0] * r[:, 1] - e1[:, 1] * r[:, 0]) / safe
        w = np.column_stack([1.0 - u - v, u, v])
        inside = ok & (w >= -1e-9).all(axis=1)
        if not inside.any():
            raise RuntimeError(f"no surface in front of landmark position {point}")
        depth = np.where(inside, (w * tri[:, :, 2]).sum(axis=1), -np.inf)
        best = int(depth.argmax())
        face_idx.append(best)
        bary.append(np.clip(w[best], 0.0, 1.0) / np.clip(w[best], 0.0, 1.0).sum())
    return np.array(face_idx), np.array(bary)


def _on_chain(mesh: _Mesh, chain: np.ndarray, x: float) -> tuple[int, np.ndarray]:
    """A point at horizontal position ``x`` along a rim chain (vertices ordered by x), embedded in the skin
    face that owns that rim edge, so it moves with its own lid or lip."""
    xs = mesh.verts[chain, 0]
    i = int(np.clip(np.searchsorted(xs, x) - 1, 0, len(chain) - 2))
    a, b = chain[i], chain[i + 1]
    t = float(np.clip((x - xs[i]) / (xs[i + 1] - xs[i]), 0.0, 1.0))
    faces = mesh.skin.faces
    face = int(np.flatnonzero((faces == a).any(axis=1) & (faces == b).any(axis=1))[0])
    bary = np.where(faces[face] == a, 1.0 - t, 0.0) + np.where(faces[face] == b, t, 0.0)
    return face, bary


def _rim_chains(mesh: _Mesh, which: int) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower rim of an eye opening, each ordered by x and holding both corners."""
    rim = mesh.eye_rims[which]
    p = mesh.verts[rim]
    lo, hi = p[:, 0].argmin(), p[:, 0].argmax()
    chord = np.interp(p[:, 0], [p[lo, 0], p[hi, 0]], [p[lo, 1], p[hi, 1]])
    upper, lower = rim[p[:, 1] >= chord - 1e-12], rim[p[:, 1] <= chord + 1e-12]
    return upper[np.argsort(mesh.verts[upper, 0])], lower[np.argsort(mesh.verts[lower, 0])]


def _mouth_chains(mesh: _Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lip rim from the right corner to the left one."""
    loop, side = mesh.loop, mesh.side
    corners = loop[side == 0.0]
    x = mesh.verts[:, 0]
    chains = []
    for s in (1.0, -1.0):
        chain = np.concatenate([corners, loop[side == s]])
        chains.append(chain[np.argsort(x[chain])])
    return chains[0], chains[1]


def _static_landmarks(mesh: _Mesh) -> tuple[np.ndarray, np.ndarray]:
    """iBUG points 17-67: brows, nose and outer lips where the front view sees them; eye
    corners and lids, and the inner lips, on their rims."""
    skin = mesh.verts[: mesh.n_skin]
    brow_x = np.linspace(0.013, 0.054, 5)  # inner to outer
    midline = skin[(skin[:, 0] == 0.0) & (np.abs(skin[:, 1] + 0.005) < 0.015)]
    tip_y = midline[midline[:, 2].argmax(), 1]
    extra, up, down, _ = _LIP_RINGS[_LIP_BORDER_RING - 1]
    upper_x, lower_x = np.array([-0.016, -0.0065, 0.0, 0.0065, 0.016]), np.array([0.016, 0.007, 0.0, -0.007, -0.016])
    border = np.sqrt(1.0 - (np.concatenate([upper_x, lower_x]) / (_MOUTH_W + extra)) ** 2)
    front_xy = np.vstack([
        np.column_stack([-brow_x[::-1], _brow_centre(brow_x[::-1])]),  # 17-21 right brow, outer to inner
        np.column_stack([brow_x, _brow_centre(brow_x)]),  # 22-26 left brow, inner to outer
        np.column_stack([np.zeros(4), [_EYE[1], 0.018, 0.004, tip_y]]),  # 27-30 bridge to tip
        np.column_stack([[-0.012, -0.006, 0.0, 0.006, 0.012], [-0.019, -0.0205, -0.021, -0.0205, -0.019]]),  # 31-35
        np.column_stack([upper_x, _MOUTH_Y + up * border[:5]]),  # 49-53 upper lip border
        np.column_stack([lower_x, _MOUTH_Y - down * border[5:]]),  # 55-59 lower lip border
    ])
    f_front, b_front = _front_hits(mesh.verts, mesh.skin.faces, front_xy)

    third = _EYE_A / 3.0
    on_rims = []
    for which in (1, 0):  # 36-41 right eye from its outer corner, 42-47 left eye from its inner corner
        upper, lower = _rim_chains(mesh, which)
        cx = _EYE[0] if which == 0 else -_EYE[0]
        on_rims += [(upper, mesh.verts[upper[0], 0]), (upper, cx - third), (upper, cx + third),
                    (upper, mesh.verts[upper[-1], 0]), (lower, cx + third), (lower, cx - third)]
    top, bottom = _mouth_chains(mesh)
    right, left = mesh.verts[top[0], 0], mesh.verts[top[-1], 0]
    on_rims += [(top, right), (top, -0.009), (top, 0.0), (top, 0.009), (top, left),  # 60-64
                (bottom, 0.009), (bottom, 0.0), (bottom, -0.009)]  # 65-67
    f_rim, b_rim = zip(*(_on_chain(mesh, chain, x) for chain, x in on_rims))
    f_rim, b_rim = np.array(f_rim), np.array(b_rim)
    # iBUG order: 17-35 front, 36-47 eyes, 48 right corner (= 60), 49-53, 54 left corner (= 64), 55-59, 60-67
    faces = np.concatenate([f_front[:19], f_rim[:12], f_rim[12:13], f_front[19:24], f_rim[16:17], f_front[24:],
                            f_rim[12:]])
    bary = np.vstack([b_front[:19], b_rim[:12], b_rim[12:13], b_front[19:24], b_rim[16:17], b_front[24:], b_rim[12:]])
    return faces, bary


def _yaw(degrees: float) -> np.ndarray:
    """Rotation about +y whose DECA yaw (``rot_mat_to_euler``) is ``degrees``."""
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])


class _ContourRegion:
    """The skin that the jaw contour may lie on: in front of the ears, above the underside of the
    jaw and the neck; its triangle edges, each with the face it comes from."""

    def __init__(self, mesh: _Mesh):
        faces = mesh.skin.faces
        tri = mesh.verts[faces]
        centre = tri.mean(axis=1)
        normal = _unit(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))
        rel = centre - _JAW_HINGE
        throat = (np.degrees(np.arctan2(rel[:, 2], -rel[:, 1])) < 30.0) & (centre[:, 1] < -0.07)
        keep = (rel[:, 2] > 0.0) & (normal[:, 1] > -0.55) & ~throat & (centre[:, 1] < _EYE[1])
        self.face = np.repeat(np.flatnonzero(keep), 3)
        kept = faces[keep]
        self.edges = np.stack([kept, np.roll(kept, -1, axis=1)], axis=2).reshape(-1, 2)
        self.normal = np.repeat(normal[keep], 3, axis=0)
        self.faces = faces


def _contour_at(mesh: _Mesh, region: _ContourRegion, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """The 17 contour points for a head turned by ``yaw`` degrees: along 17 fanned rays in the
    image (from the right ear down through the chin to the left ear), the outermost crossing
    of the face region's outline, which is the visible silhouette or the face's edge."""
    rot = _yaw(yaw)
    v = mesh.verts[: mesh.n_skin] @ rot.T
    origin = (rot @ np.array([0.0, -0.012, 0.05]))[:2]
    angles = np.deg2rad(np.linspace(160.0, 380.0, 17))
    a, b = v[region.edges[:, 0], :2], v[region.edges[:, 1], :2]
    e, r = b - a, a - origin
    facing = (region.normal @ rot.T)[:, 2]
    faces, bary = [], []
    for angle in angles:
        u = np.array([np.cos(angle), np.sin(angle)])
        det = u[1] * e[:, 0] - u[0] * e[:, 1]
        safe = np.where(np.abs(det) > 1e-15, det, np.inf)
        t = (r[:, 1] * e[:, 0] - r[:, 0] * e[:, 1]) / safe
        s = (u[0] * r[:, 1] - u[1] * r[:, 0]) / safe
        valid = (t > 0) & (s >= 0) & (s <= 1)
        t = np.where(valid, t, -np.inf)
        outer = t >= t.max() - 1e-9
        pick = np.flatnonzero(outer)[facing[outer].argmax()]
        face = region.faces[region.face[pick]]
        i, j = region.edges[pick]
        faces.append(region.face[pick])
        bary.append(np.where(face == i, 1.0 - s[pick], 0.0) + np.where(face == j, s[pick], 0.0))
    return np.array(faces), np.array(bary)


def _landmark_embedding(mesh: _Mesh) -> LandmarkEmbedding:
    static_faces, static_bary = _static_landmarks(mesh)
    region = _ContourRegion(mesh)
    contour = [_contour_at(mesh, region, float(yaw)) for yaw in CONTOUR_BIN_YAWS]
    dyn_faces = np.stack([c[0] for c in contour])
    dyn_bary = np.stack([c[1] for c in contour])
    frontal = int(np.flatnonzero(CONTOUR_BIN_YAWS == 0)[0])
    return LandmarkEmbedding(
        static_lmk_faces_idx=static_faces.astype(np.int64),
        static_lmk_bary_coords=static_bary,
        dynamic_lmk_faces_idx=dyn_faces.astype(np.int64),
        dynamic_lmk_bary_coords=dyn_bary,
        full_lmk_faces_idx=np.concatenate([dyn_faces[frontal], static_faces])[None].astype(np.int64),
        full_lmk_bary_coords=np.concatenate([dyn_bary[frontal], static_bary])[None],
    )


# --- the model ----------------------------------------------------------------------------


def build_head(seed: int = 0, detail: int = 1) -> tuple[FlameModel, LandmarkEmbedding]:
    """The procedural head as a FLAME-format model and its DECA-style landmark embedding.

    ``detail`` multiplies the vertex density of the face grid and of the rest of the head (the
    rings at the eyes, brows and lips stay as they are): 1 gives about 3.7k vertices.  The
    template and the hand-made bases do not depend on ``seed``; the seeded random identity
    fields (the last :data:`NUM_RANDOM_SHAPES` identity components) do.
    """
    if detail < 1:
        raise ValueError(f"detail must be a positive integer, got {detail}")
    mesh = _Mesh(_build_skin(int(detail)))
    identity = _identity_basis(mesh, np.random.default_rng(seed))
    model = FlameModel(
        v_template=mesh.verts,
        faces=mesh.faces.astype(np.int64),
        shapedirs=np.concatenate([identity, _expression_basis(mesh)], axis=2),
        posedirs=_pose_correctives(mesh),
        J_regressor=_joint_regressor(mesh),
        kintree_table=np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        weights=_skinning_weights(mesh),
        shape_basis_size=identity.shape[2],
        extras={
            "expression_names": list(EXPRESSION_NAMES),
            "shape_names": list(SHAPE_NAMES) + [f"random_{i}" for i in range(NUM_RANDOM_SHAPES)],
            "region_names": list(REGION_NAMES),
            "vertex_region": mesh.region.astype(np.uint8),
        },
    )
    return model, _landmark_embedding(mesh)
