"""The ``fit`` reconstruction backend: FLAME-format parameters of one clip from its 68 landmarks.

Unknowns: one identity ``shape`` per clip (or a given one: an actor's, see
``scmcl.preprocess.identity``); per frame the expression, the jaw and global
rotation (``pose`` = DECA's ``[global(3), jaw(3)]``) and DECA's orthographic camera
``cam = [s, tx, ty]``; neck and eyes stay zero.  All frames are solved together by L-BFGS in
three stages, each starting where the last stopped:

1. rigid: global rotation and camera, from a landmark-bounding-box initialisation, on the
   points the mouth does not move;
2. rigid + jaw on all points, so that mouth opening is first explained by the jaw (which
   has no coefficient prior) rather than by expression blendshapes that mimic it;
3. everything, with priors and temporal smoothness.

Why it is built this way:

- Only the landmarks matter, so the fit runs on a *landmark sub-model*: the vertices of the
  landmark triangles plus the joints carried as extra vertices (their regressed positions are
  linear in the coefficients), which gives exactly the layer's landmarks at a small fraction
  of the cost (5023 → a few hundred vertices for the real FLAME).
- Every unknown is optimised in *pixel units*: a unit step of a variable moves the landmarks
  by one pixel RMS (measured by the Jacobian at the neutral head).  That conditions the
  problem for coefficients, radians and camera alike, for FLAME and the built-in head, and
  lets the smoothness terms measure frame-to-frame change as landmark motion in pixels.
- Pixels are those of a 256-pixel crop (:data:`REF_SIZE`) whatever the input size, so one
  set of weights serves 128, 224 and 256 crops.
- Frames marked invalid (or with non-finite landmarks) have no data term; the smoothness
  terms interpolate them from their neighbours.
- Smoothness is weak on purpose: landmarks pin every usable frame well, and a strong
  penalty on real speech-rate motion is paid by trading jaw opening for expression and head
  rotation for head depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from scmcl.face3d.camera import orthographic
from scmcl.face3d.flame import FlameLayer, landmarks_from_vertices
from scmcl.face3d.flame_model import FlameModel, LandmarkEmbedding

#: Image side (pixels) that residuals and weights are expressed in.
REF_SIZE = 256
#: The 17 jaw-contour points of the iBUG-68 layout come first.
N_CONTOUR = 17
N_LANDMARKS = 68
#: iBUG-68 points that hardly move with the mouth (upper contour, brows, nose, eyes): the rigid
#: stage and the camera initialisation use only these, so an open mouth is not taken for scale.
RIGID_POINTS = np.r_[0:4, 13:48]
#: Most L-BFGS runs per stage, each with the jaw-contour rows re-selected (see :func:`_optimise`).
CONTOUR_ROUNDS = 4
#: Unknowns of the head's rigid motion.
_RIGID = ("rot", "log_s", "trans")
#: Kinematic-tree table entry that marks the root (FLAME stores uint32 -1).
_ROOT_ID = 4294967295


@dataclass
class FitSettings:
    """Sizes, iterations (L-BFGS steps per stage) and weights of :func:`fit_clip`.

    ``n_shape``/``n_exp``: leading components fitted (at most the layer's; DECA uses 100/50
    of the real FLAME).  The data term sums, over the 68 landmarks, a Charbonnier cost of the
    point distance (≈ squared distance below ``robust_px``) times the point's weight (1, or
    ``contour_weight`` for the jaw contour), in pixels of a 256-pixel crop.  So ``w_exp = 1``
    is the MAP weight of a unit-variance coefficient prior under 1-pixel landmark noise (the
    config's default is stronger: landmarks hardly see some blendshapes, see the schema); the
    identity prior ``w_shape`` counts like one frame's.  The jaw costs ``w_jaw`` per squared
    radian of opening outside ``jaw_range`` and ``w_jaw_side`` per squared radian of its other
    two axes.  ``w_smooth``/``w_smooth_acc`` weigh the squared first/second frame differences
    of every per-frame unknown, measured as landmark motion (squared pixels summed over the
    68 points, as the data term).  ``step_scale`` scales the L-BFGS step (1 is its natural step);
    ``chunk_frames`` bounds the frames in one forward pass.
    """

    n_shape: int
    n_exp: int
    iters_full: int  # config preprocess.fit_iterations
    w_exp: float  # config preprocess.fit_expression_prior
    iters_rigid: int = 50
    iters_jaw: int = 50
    step_scale: float = 1.0
    w_shape: float = 1.0
    w_jaw: float = 1e4
    w_jaw_side: float = 1e3
    jaw_range: tuple[float, float] = (-0.05, 0.6)
    w_smooth: float = 0.002
    w_smooth_acc: float = 0.001
    contour_weight: float = 0.5
    robust_px: float = 3.0
    chunk_frames: int = 512


@dataclass
class FitResult:
    """Fitted parameters of one clip (float32) and the landmark error in input pixels.

    ``per_frame_rms`` is the RMS point-to-point distance over the 68 landmarks of each frame
    (NaN for frames without usable landmarks); ``rms_px`` the same over all usable frames.
    """

    shape: np.ndarray  # (n_shape,)
    exp: np.ndarray  # (T, n_exp)
    pose: np.ndarray  # (T, 6)
    cam: np.ndarray  # (T, 3)
    rms_px: float
    per_frame_rms: np.ndarray  # (T,)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def landmark_sublayer(layer: FlameLayer, n_shape: int, n_exp: int) -> FlameLayer:
    """A layer giving the same 68 landmarks as ``layer`` (first ``n_shape``/``n_exp`` components)
    from only the landmark triangles' vertices, with each joint carried as an extra vertex whose
    blendshapes are the regressed ones and whose regressor row picks it alone."""
    if not layer.has_landmarks:
        raise ValueError("fitting needs a FlameLayer built with a landmark embedding")
    if not (0 <= n_shape <= layer.n_shape and 0 <= n_exp <= layer.n_exp):
        raise ValueError(f"n_shape={n_shape}, n_exp={n_exp} exceed the layer's {layer.n_shape} identity "
                         f"and {layer.n_exp} expression components")
    lmk_faces = {k: _numpy(getattr(layer, f"{k}_lmk_faces_idx")) for k in ("static", "dynamic", "full")}
    used_faces, face_map = np.unique(np.concatenate([f.ravel() for f in lmk_faces.values()]), return_inverse=True)
    faces = _numpy(layer.faces)[used_faces]
    used_verts, vert_map = np.unique(faces.ravel(), return_inverse=True)
    n_joints = layer.J_regressor.shape[0]

    regressor = _numpy(layer.J_regressor).astype(np.float64)
    cols = np.r_[np.arange(n_shape), layer.n_shape + np.arange(n_exp)]
    shapedirs = _numpy(layer.shapedirs)[:, :, cols]
    joint_dirs = np.einsum("jv,vcl->jcl", regressor, shapedirs)
    posedirs = _numpy(layer.posedirs)
    weights = np.zeros((n_joints, n_joints))
    weights[:, 0] = 1.0
    model = FlameModel(
        v_template=np.concatenate([_numpy(layer.v_template)[used_verts], regressor @ _numpy(layer.v_template)]),
        faces=vert_map.reshape(faces.shape).astype(np.int64),
        shapedirs=np.concatenate([shapedirs[used_verts], joint_dirs]),
        posedirs=np.concatenate([posedirs[used_verts], np.zeros((n_joints, *posedirs.shape[1:]))]),
        J_regressor=np.concatenate([np.zeros((n_joints, len(used_verts))), np.eye(n_joints)], axis=1),
        kintree_table=np.array([[_ROOT_ID if p < 0 else p for p in layer.parents], np.arange(n_joints)]),
        weights=np.concatenate([_numpy(layer.lbs_weights)[used_verts], weights]),
        shape_basis_size=n_shape,
    )
    sizes = [f.size for f in lmk_faces.values()]
    remapped = dict(zip(lmk_faces, np.split(face_map.astype(np.int64), np.cumsum(sizes)[:-1])))
    embedding = LandmarkEmbedding(
        **{f"{k}_lmk_faces_idx": remapped[k].reshape(lmk_faces[k].shape) for k in lmk_faces},
        **{f"{k}_lmk_bary_coords": _numpy(getattr(layer, f"{k}_lmk_bary_coords")) for k in lmk_faces},
    )
    return FlameLayer(model, embedding, dtype=layer.v_template.dtype).to(layer.v_template.device)


@dataclass
class _Problem:
    """What every loss evaluation needs: the sub-model, targets, weights and unit scales."""

    layer: FlameLayer
    target: torch.Tensor  # (T,68,2) in reference pixels, zeros where unusable
    valid: torch.Tensor  # (T,) bool
    lmk_weight: torch.Tensor  # (68,)
    image_size: int
    settings: FitSettings


class _Unknowns(torch.nn.Module):
    """The clip's unknowns as pixel-unit offsets ``z`` from a start ``x0``: ``x = x0 + z / unit``.

    Camera values are ``log s`` and ``(tx, ty)`` so the scale stays positive and its smoothness
    is relative.
    """

    def __init__(self, x0: dict[str, torch.Tensor], unit: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.x0, self.unit = x0, unit
        self.z = torch.nn.ParameterDict({k: torch.nn.Parameter(torch.zeros_like(v)) for k, v in x0.items()})

    def value(self, key: str) -> torch.Tensor:
        return self.x0[key] + self.z[key] / self.unit[key]

    def scaled(self, key: str) -> torch.Tensor:
        """The value in pixel units (for smoothness)."""
        return self.x0[key] * self.unit[key] + self.z[key]

    def pose(self) -> torch.Tensor:
        return torch.cat([self.value("rot"), self.value("jaw")], dim=1)

    def cam(self) -> torch.Tensor:
        return torch.cat([self.value("log_s").exp(), self.value("trans")], dim=1)


def _project(problem: _Problem, shape: torch.Tensor, exp: torch.Tensor, pose: torch.Tensor,
             cam: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Landmarks (B,68,2) in reference pixels with the jaw-contour rows ``bins`` (B,) given
    rather than taken from the head yaw (see :func:`_optimise`)."""
    layer = problem.layer
    vertices = layer(shape.expand(exp.shape[0], -1), exp, pose).vertices
    faces_idx = torch.cat([layer.dynamic_lmk_faces_idx[bins], layer.static_lmk_faces_idx.expand(len(bins), -1)], 1)
    bary = torch.cat([layer.dynamic_lmk_bary_coords[bins], layer.static_lmk_bary_coords.expand(len(bins), -1, -1)], 1)
    lmk = landmarks_from_vertices(vertices, layer.faces, faces_idx, bary)
    size = problem.image_size
    return orthographic(lmk, cam, size, size)[..., :2] * (REF_SIZE / size)


def _contour_bins(problem: _Problem, unknowns: _Unknowns) -> torch.Tensor:
    """The jaw-contour row (T,) each frame's current head rotation selects."""
    rot = unknowns.value("rot").detach()
    zeros = rot.new_zeros(rot.shape[0], 3)
    return problem.layer.contour_bins(torch.cat([rot, zeros, zeros, zeros, zeros], dim=1))


def _charbonnier(dist2: torch.Tensor, delta: float) -> torch.Tensor:
    """≈ squared distance near zero, ≈ 2·delta·distance far out: outlier landmarks pull linearly."""
    return 2.0 * delta**2 * (torch.sqrt(1.0 + dist2 / delta**2) - 1.0)


def _data_term(problem: _Problem, unknowns: _Unknowns, frames: slice, weight: torch.Tensor,
               bins: torch.Tensor) -> torch.Tensor | None:
    """Robust landmark cost of the usable frames in ``frames``, weighted per landmark, summed
    (``None`` when the chunk has no usable frame)."""
    valid = problem.valid[frames]
    if not bool(valid.any()):
        return None
    pred = _project(problem, unknowns.value("shape"), unknowns.value("exp")[frames][valid],
                    unknowns.pose()[frames][valid], unknowns.cam()[frames][valid], bins[frames][valid])
    dist2 = ((pred - problem.target[frames][valid]) ** 2).sum(-1)
    return (_charbonnier(dist2, problem.settings.robust_px) * weight).sum()


def _jaw_prior(jaw: torch.Tensor, s: FitSettings) -> torch.Tensor:
    """Opening outside the plausible range and any sideways/twisting jaw rotation cost."""
    low, high = s.jaw_range
    opening = jaw[:, 0]
    outside = torch.relu(low - opening) ** 2 + torch.relu(opening - high) ** 2
    return s.w_jaw * outside.sum() + s.w_jaw_side * (jaw[:, 1:] ** 2).sum()


def _smoothness(unknowns: _Unknowns, keys: tuple[str, ...], s: FitSettings) -> torch.Tensor:
    """First and second temporal differences of the per-frame unknowns, in pixels."""
    terms = []
    for key in keys:
        x = unknowns.scaled(key)
        vel = x[1:] - x[:-1]
        acc = vel[1:] - vel[:-1]
        terms.append(s.w_smooth * (vel**2).sum() + s.w_smooth_acc * (acc**2).sum())
    return N_LANDMARKS * torch.stack(terms).sum()


def _prior_terms(unknowns: _Unknowns, keys: tuple[str, ...], n_frames: int, s: FitSettings) -> torch.Tensor:
    """Everything but the data term, per frame as the data term; the identity prior is weighed
    against one frame rather than the whole clip so that long clips do not let landmark-blind
    identity directions (head depth against rotation) drift."""
    total = _smoothness(unknowns, tuple(k for k in keys if k != "shape"), s)
    if "exp" in keys:
        total = total + s.w_exp * (unknowns.value("exp") ** 2).sum()
    if "jaw" in keys:
        total = total + _jaw_prior(unknowns.value("jaw"), s)
    total = total / n_frames
    if "shape" in keys:
        total = total + s.w_shape * (unknowns.value("shape") ** 2).sum()
    return total


def _optimise(problem: _Problem, unknowns: _Unknowns, keys: tuple[str, ...], iters: int,
              weight: torch.Tensor) -> None:
    """L-BFGS on the ``keys`` unknowns for ``iters`` steps in all.

    The yaw-dependent jaw contour makes the loss jump wherever a frame's contour row changes,
    which stops a line search dead; so each L-BFGS run keeps the rows of its start fixed (a
    smooth loss), and a new run starts with the rows re-selected until they stop changing, the
    steps are spent or :data:`CONTOUR_ROUNDS` runs are done (a frame whose yaw sits on a row
    boundary can flip back and forth for ever).  The data gradient is accumulated over frame
    chunks so memory stays bounded while the identity stays shared.
    """
    s = problem.settings
    params = [unknowns.z[k] for k in keys]
    n_frames = problem.target.shape[0]
    n_valid = int(problem.valid.sum())
    chunks = [slice(i, min(i + s.chunk_frames, n_frames)) for i in range(0, n_frames, s.chunk_frames)]
    left = iters
    if left <= 0:
        return
    bins = _contour_bins(problem, unknowns)

    def closure() -> float:
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for frames in chunks:
            loss = _data_term(problem, unknowns, frames, weight, bins)
            if loss is not None:
                (loss / n_valid).backward()
                total += loss.item() / n_valid
        prior = _prior_terms(unknowns, keys, n_frames, s)
        prior.backward()
        return total + prior.item()

    for _ in range(CONTOUR_ROUNDS):
        opt = torch.optim.LBFGS(params, lr=s.step_scale, max_iter=left, history_size=50, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-7, tolerance_change=1e-9)
        opt.step(closure)
        left -= opt.state[params[0]]["n_iter"]
        previous, bins = bins, _contour_bins(problem, unknowns)
        if left <= 0 or torch.equal(previous, bins):
            break


def _fill_gaps(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-frame values (T,C) with the invalid frames linearly interpolated (held at the ends)."""
    t = np.arange(values.shape[0])
    ok = _numpy(valid)
    filled = np.stack([np.interp(t, t[ok], col[ok]) for col in _numpy(values).T], axis=1)
    return torch.as_tensor(filled, dtype=values.dtype, device=values.device)


def _camera_init(problem: _Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame ``log s`` (T,1) and ``(tx, ty)`` (T,2) aligning the box of the model's neutral
    frontal :data:`RIGID_POINTS` with that of each frame's."""
    lmk = problem.layer(torch.zeros(1, problem.layer.n_shape, dtype=problem.target.dtype,
                                    device=problem.target.device)).landmarks[0, RIGID_POINTS, :2]
    model_lo, model_hi = lmk.min(0).values, lmk.max(0).values
    half = REF_SIZE / 2.0
    ndc = torch.stack([problem.target[..., 0] / half - 1.0, 1.0 - problem.target[..., 1] / half], dim=-1)
    obs_lo, obs_hi = ndc[:, RIGID_POINTS].min(1).values, ndc[:, RIGID_POINTS].max(1).values
    scale = torch.sqrt(((obs_hi - obs_lo) / (model_hi - model_lo)).prod(-1, keepdim=True))
    trans = (obs_lo + obs_hi) / (2.0 * scale) - (model_lo + model_hi) / 2.0
    init = _fill_gaps(torch.cat([scale.log(), trans], dim=1), problem.valid)
    return init[:, :1], init[:, 1:]


def _units(problem: _Problem, log_s: torch.Tensor) -> dict[str, torch.Tensor]:
    """RMS landmark motion (reference pixels) per unit of each unknown, at the neutral head seen
    at the clip's median scale; a floor keeps landmark-blind components from taking huge steps."""
    layer = problem.layer
    sizes = {"shape": layer.n_shape, "exp": layer.n_exp, "rot": 3, "jaw": 3, "log_s": 1, "trans": 2}
    ref = problem.target
    median_log_s = log_s.median()
    frontal = torch.zeros(1, dtype=torch.long, device=ref.device)

    def landmarks(flat: torch.Tensor) -> torch.Tensor:
        x = dict(zip(sizes, flat.split(list(sizes.values()))))
        cam = torch.cat([(median_log_s + x["log_s"]).exp(), x["trans"]])[None]
        pose = torch.cat([x["rot"], x["jaw"]])[None]
        return _project(problem, x["shape"][None], x["exp"][None], pose, cam, frontal)[0]

    flat0 = ref.new_zeros(sum(sizes.values()))
    jac = torch.autograd.functional.jacobian(landmarks, flat0)  # (68,2,P)
    unit = jac.pow(2).sum(1).mean(0).sqrt()
    unit = unit.clamp_min(1e-2 * float(unit.median()))
    return dict(zip(sizes, unit.split(list(sizes.values()))))


def _as_problem(layer: FlameLayer, landmarks: np.ndarray | torch.Tensor, image_size: int,
                settings: FitSettings, valid: np.ndarray | torch.Tensor | None,
                device: torch.device) -> _Problem:
    """Checked inputs on ``device`` in double precision: L-BFGS line searches compare loss
    changes far below float32 resolution of a sum over thousands of landmark terms."""
    sub = landmark_sublayer(layer, settings.n_shape, settings.n_exp).to(device=device, dtype=torch.float64)
    dtype = sub.v_template.dtype
    target = torch.as_tensor(landmarks, dtype=dtype, device=device)
    if target.ndim != 3 or target.shape[1:] != (N_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (T, 68, 2), got {tuple(target.shape)}")
    usable = torch.isfinite(target).all(-1).all(-1)
    if valid is not None:
        valid_t = torch.as_tensor(valid, dtype=torch.bool, device=device)
        if valid_t.shape != usable.shape:
            raise ValueError(f"valid must have shape ({target.shape[0]},), got {tuple(valid_t.shape)}")
        usable = usable & valid_t
    if not bool(usable.any()):
        raise ValueError("no frame has usable landmarks to fit")
    weight = torch.ones(N_LANDMARKS, dtype=dtype, device=device)
    weight[:N_CONTOUR] = settings.contour_weight
    target = torch.where(usable[:, None, None], target, torch.zeros_like(target)) * (REF_SIZE / image_size)
    return _Problem(sub, target, usable, weight, image_size, settings)


def _frame_rms(problem: _Problem, unknowns: _Unknowns) -> torch.Tensor:
    """RMS point distance (input pixels) per frame, NaN where the frame had no usable landmarks."""
    with torch.no_grad():
        pred = _project(problem, unknowns.value("shape"), unknowns.value("exp"), unknowns.pose(), unknowns.cam(),
                        _contour_bins(problem, unknowns))
        rms = ((pred - problem.target) ** 2).sum(-1).mean(-1).sqrt() * (problem.image_size / REF_SIZE)
    return torch.where(problem.valid, rms, torch.full_like(rms, math.nan))


def fit_clip(
    layer: FlameLayer,
    landmarks: np.ndarray | torch.Tensor,
    image_size: int,
    settings: FitSettings,
    valid: np.ndarray | torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    identity: np.ndarray | None = None,
) -> FitResult:
    """Fit one clip's FLAME parameters to its 68 landmarks (T,68,2), pixels of a square crop of
    side ``image_size`` (x right, y down, pixel centres at +0.5, as :func:`orthographic`).

    ``valid`` (T,) excludes frames from the data term (so do non-finite landmarks); their
    parameters come from the temporal smoothness.  ``identity`` (``n_shape``,) fixes the shape
    instead of fitting it: an expression held through a clip (an emotion) moves the landmarks
    as a different face would, and a free per-clip identity, whose prior counts like one
    frame's, takes most of it.  Deterministic on the CPU.
    """
    device = torch.device(device)
    problem = _as_problem(layer, landmarks, image_size, settings, valid, device)
    n_frames = problem.target.shape[0]
    log_s, trans = _camera_init(problem)
    zeros = problem.target.new_zeros
    shape = zeros(settings.n_shape)
    if identity is not None:
        if np.shape(identity) != (settings.n_shape,):
            raise ValueError(f"the identity has shape {np.shape(identity)}, the fit {settings.n_shape} identity components")
        shape = torch.as_tensor(np.asarray(identity), dtype=shape.dtype, device=device)
    x0 = {"shape": shape, "exp": zeros(n_frames, settings.n_exp), "rot": zeros(n_frames, 3),
          "jaw": zeros(n_frames, 3), "log_s": log_s, "trans": trans}
    unknowns = _Unknowns(x0, _units(problem, log_s))
    rigid_weight = torch.zeros_like(problem.lmk_weight)
    rigid_weight[RIGID_POINTS] = problem.lmk_weight[RIGID_POINTS]
    _optimise(problem, unknowns, _RIGID, settings.iters_rigid, rigid_weight)
    _optimise(problem, unknowns, (*_RIGID, "jaw"), settings.iters_jaw, problem.lmk_weight)
    _optimise(problem, unknowns, tuple(k for k in x0 if k != "shape" or identity is None), settings.iters_full,
              problem.lmk_weight)

    rms = _frame_rms(problem, unknowns)
    good = rms[problem.valid]
    with torch.no_grad():
        return FitResult(
            shape=_numpy(unknowns.value("shape")).astype(np.float32),
            exp=_numpy(unknowns.value("exp")).astype(np.float32),
            pose=_numpy(unknowns.pose()).astype(np.float32),
            cam=_numpy(unknowns.cam()).astype(np.float32),
            rms_px=float(torch.sqrt((good**2).mean())),
            per_frame_rms=_numpy(rms).astype(np.float32),
        )
