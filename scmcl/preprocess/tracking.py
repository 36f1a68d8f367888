"""Face tracking behind one interface: per-frame boxes and 68 landmarks, then smoothed square crops.

Backends (``make_tracker``): ``dlib`` (HOG detector + the 68-point predictor shipped by
``face_recognition_models``; CPU, fully offline), ``fan`` (face-alignment's S3FD + 2D FAN, weights
pre-seeded in the torch hub cache) and ``synthetic`` (the built-in corpus's ground truth).

Coordinates are the project's screen space (``scmcl.face3d.camera``): x right, y down, pixel
``(row i, col j)`` covers ``[j, j+1) x [i, i+1)``, so its centre is ``(j + 0.5, i + 0.5)``; the
detectors' integer pixel indices are shifted by 0.5 into it. Boxes are ``[x0, y0, x1, y1]``.

The post-processing is NED's ``detect.py`` (method.md §2.2) with its defects fixed: gaps are
filled from both neighbours over the whole clip (no 500-frame chunks, no ``None`` box when the
first chunk has no face), each filled clip is logged with its count, and a clip without any face
is an error naming it.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import pandas as pd
from scipy.ndimage import median_filter

from scmcl.io.clip_data import BLOCKS, check_table, frames_table, read_frame_table, rerun

N_POINTS = 68
FAN_URL = "https://www.adrianbulat.com/downloads/python-fan/"
FAN_WEIGHTS = ("s3fd-619a316812.pth", "2DFAN4-11f355bf06.pth.tar")
DLIB_INSTALL = "pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0"
PIXEL_CENTRE = 0.5  # a detector's pixel index i is the point i + 0.5 in screen space

log = logging.getLogger(__name__)


class TrackingError(RuntimeError):
    """A tracker cannot be built or a clip cannot be tracked; the message names what to fix."""


@dataclass
class Detections:
    """Raw per-frame output of a tracker: one face per frame at most, NaN where none was found."""

    boxes: np.ndarray  # (T, 4) float [x0, y0, x1, y1]
    landmarks: np.ndarray  # (T, 68, 2) float
    found: np.ndarray  # (T,) bool

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float64)
        self.landmarks = np.asarray(self.landmarks, np.float64)
        self.found = np.asarray(self.found, bool)
        t = len(self.found)
        if self.boxes.shape != (t, 4) or self.landmarks.shape != (t, N_POINTS, 2):
            raise ValueError(f"inconsistent detections: boxes {self.boxes.shape}, landmarks {self.landmarks.shape}, found {self.found.shape}")

    @classmethod
    def empty(cls, frames: int) -> Detections:
        """All frames without a face, ready to be filled in frame by frame."""
        return cls(np.full((frames, 4), np.nan), np.full((frames, N_POINTS, 2), np.nan), np.zeros(frames, bool))


class Tracker(Protocol):
    """Anything that finds one face (box + 68 points) per RGB frame."""

    def detect(self, frames: np.ndarray) -> Detections: ...


def check_frames(frames: np.ndarray, name: str = "clip") -> np.ndarray:
    """Trackers take a (T,H,W,3) uint8 RGB stack; anything else is a caller bug worth naming."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{name}: expected frames (T,H,W,3) uint8 RGB, got {frames.shape} {frames.dtype}")
    if len(frames) == 0:
        raise TrackingError(f"{name}: no frames to track")
    return frames


def _pick(boxes: np.ndarray, scores: np.ndarray) -> int:
    """Index of the most confident face; the larger one wins a tie."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return int(np.lexsort((area, scores))[-1])


def landmark_bbox(landmarks: np.ndarray) -> np.ndarray:
    """The tight box around each frame's points (NaN rows stay NaN)."""
    return np.concatenate([landmarks.min(axis=1), landmarks.max(axis=1)], axis=1)


# --- tables -------------------------------------------------------------------------------------

def detections_table(det: Detections) -> pd.DataFrame:
    """One row per frame: ``frame, found``, then the ``box`` and ``landmarks`` blocks of
    :mod:`scmcl.io.clip_data` (the naming of ``frames.parquet``)."""
    return frames_table({"box": det.boxes, "landmarks": det.landmarks}, found=det.found)


# --- backends -----------------------------------------------------------------------------------

def _dlib_predictor_path() -> Path:
    """The 68-point model inside ``face_recognition_models``, found without importing it
    (its ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise TrackingError(f"the dlib tracker needs the packages dlib-bin and face-recognition-models: {DLIB_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise TrackingError(f"face_recognition_models has no {path.name} at {path}: reinstall it ({DLIB_INSTALL})")
    return path


class DlibTracker:
    """dlib's HOG frontal detector + 68-point shape predictor, on the CPU, with no download."""

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError:
            raise TrackingError(f"the dlib tracker needs the packages dlib-bin and face-recognition-models: {DLIB_INSTALL}") from None
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(_dlib_predictor_path()))

    def _face(self, frame: np.ndarray):
        """Best face rectangle, trying an upsampled pass only when the plain one finds nothing
        (upsampling finds small faces but also more false positives)."""
        for upsample in (0, 1):
            rects, scores, _ = self._detector.run(frame, upsample, 0.0)
            if len(rects):
                boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float64)
                return rects[_pick(boxes, np.asarray(scores))]
        return None

    def detect(self, frames: np.ndarray) -> Detections:
        frames = check_frames(frames)
        det = Detections.empty(len(frames))
        for t, frame in enumerate(frames):
            frame = np.ascontiguousarray(frame)
            rect = self._face(frame)
            if rect is None:
                continue
            shape = self._predictor(frame, rect)
            det.landmarks[t] = np.array([(p.x, p.y) for p in shape.parts()]) + PIXEL_CENTRE
            # dlib's right/bottom are inclusive pixel indices; the box edge lies one pixel further.
            det.boxes[t] = (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
            det.found[t] = True
        return det


def fan_weights_dir() -> Path:
    """Where face-alignment looks for its weights: ``torch.hub.get_dir()/checkpoints``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def check_fan_weights() -> Path:
    """Fail before face-alignment would try to download: both files must be pre-seeded and
    load as PyTorch checkpoints (a truncated download otherwise ends in a bare unpickling error)."""
    import torch

    folder = fan_weights_dir()
    missing = [n for n in FAN_WEIGHTS if not (folder / n).is_file()]
    if missing:
        raise TrackingError(
            f"the fan tracker runs offline and needs {FAN_WEIGHTS[0]} and {FAN_WEIGHTS[1]} in {folder} "
            f"(missing: {', '.join(missing)}); download them from the face-alignment project "
            f"({FAN_URL}{FAN_WEIGHTS[0]} and {FAN_URL}{FAN_WEIGHTS[1]}) into that folder, "
            "or point TORCH_HOME at a folder whose hub/checkpoints holds them")
    for name in FAN_WEIGHTS:
        try:
            torch.load(folder / name, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for a bad archive or pickle
            raise TrackingError(f"{folder / name} is not a readable PyTorch checkpoint ({type(err).__name__}): "
                                f"delete it and download it again from {FAN_URL}{name}") from None
    return folder


class FanTracker:
    """face-alignment's S3FD detector + 2D FAN (68 points). Frames go through both networks in
    batches of ``batch_size`` (face-alignment's own per-image API runs FAN one frame at a time)."""

    def __init__(self, device: str = "cpu", batch_size: int = 8, threshold: float = 0.5, flip: bool = True) -> None:
        check_fan_weights()
        try:
            import face_alignment
        except ImportError:
            raise TrackingError("the fan tracker needs face-alignment: pip install --no-deps face-alignment==1.5.0") from None
        from scmcl.device import resolve_device

        self.device = str(resolve_device(device))
        self.batch_size = batch_size
        self.flip = flip
        # compile=False: torch.compile costs minutes on the CPU and is slower there (stack.md §3).
        self.fa = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D, device=self.device, flip_input=flip, face_detector="sfd",
            face_detector_kwargs={"filter_threshold": threshold}, compile=False, max_batch_size=batch_size)

    def _chunks(self, index: np.ndarray):
        for start in range(0, len(index), self.batch_size):
            yield index[start:start + self.batch_size]

    def detect_boxes(self, frames: np.ndarray) -> np.ndarray:
        """(T,4) best S3FD box per frame, NaN where none passes the threshold."""
        import torch

        boxes = np.full((len(frames), 4), np.nan)
        for chunk in self._chunks(np.arange(len(frames))):
            batch = torch.from_numpy(frames[chunk]).permute(0, 3, 1, 2).float()
            for t, found in zip(chunk, self.fa.face_detector.detect_from_batch(batch)):
                found = np.asarray(found, np.float64).reshape(-1, 5)
                ok = np.isfinite(found).all(1) & (found[:, 2] > found[:, 0]) & (found[:, 3] > found[:, 1])
                if ok.any():
                    boxes[t] = found[ok][_pick(found[ok, :4], found[ok, 4]), :4]
        return boxes

    def _heatmaps(self, crops: np.ndarray) -> np.ndarray:
        """FAN heatmaps of a crop batch, summed with the mirrored pass as face-alignment does."""
        import torch
        from face_alignment.utils import flip

        net = self.fa.face_alignment_net
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).to(self.device, self.fa.dtype) / 255.0
        with torch.inference_mode():
            heat = net(x)[-1]
            if self.flip:
                heat = heat + flip(net(flip(x))[-1], is_label=True)
        return heat.float().cpu().numpy()

    def landmarks_in_boxes(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(T,68,2) FAN points inside given boxes (NaN rows are skipped), using face-alignment's
        own crop geometry so the result equals its ``get_landmarks_from_image``."""
        from face_alignment.utils import CENTER_Y_OFFSET, crop, get_preds_fromhm

        landmarks = np.full((len(frames), N_POINTS, 2), np.nan)
        valid = np.flatnonzero(np.isfinite(boxes).all(1))
        for chunk in self._chunks(valid):
            x0, y0, x1, y1 = boxes[chunk].T
            centres = np.stack([(x0 + x1) / 2, (y0 + y1) / 2 - (y1 - y0) * CENTER_Y_OFFSET], axis=1)
            scales = (x1 - x0 + y1 - y0) / self.fa.face_detector.reference_scale
            crops = np.stack([crop(frames[t], c, s) for t, c, s in zip(chunk, centres, scales)])
            heat = self._heatmaps(crops)
            for i, t in enumerate(chunk):
                _, points, _ = get_preds_fromhm(heat[i:i + 1], centres[i], scales[i])
                landmarks[t] = np.asarray(points).reshape(N_POINTS, 2) + PIXEL_CENTRE
        return landmarks

    def detect(self, frames: np.ndarray, boxes: np.ndarray | None = None) -> Detections:
        """Detect and landmark every frame; known ``boxes`` (T,4) skip the detector."""
        frames = check_frames(frames)
        boxes = self.detect_boxes(frames) if boxes is None else np.asarray(boxes, np.float64)
        landmarks = self.landmarks_in_boxes(frames, boxes)
        return Detections(boxes, landmarks, np.isfinite(landmarks).all(axis=(1, 2)))


GROUNDTRUTH_FIX = rerun("groundtruth")


class SyntheticTracker:
    """The built-in corpus's ground-truth landmarks (plus optional Gaussian noise), so the
    pipeline downstream of tracking can be tested against known answers."""

    def __init__(self, groundtruth: str | Path, noise_px: float = 0.0, seed: int = 0) -> None:
        self.path = Path(groundtruth)
        self.landmarks = read_frame_table(self.path, GROUNDTRUTH_FIX).block("landmarks")
        self.noise_px = noise_px
        self.seed = seed

    @staticmethod
    def check_input(groundtruth: str | Path) -> None:
        """Check a clip's ground-truth table from its schema, before a shard starts working."""
        check_table(groundtruth, BLOCKS["landmarks"].columns(), GROUNDTRUTH_FIX)

    def detect(self, frames: np.ndarray) -> Detections:
        frames = check_frames(frames, str(self.path))
        if len(frames) != len(self.landmarks):
            raise TrackingError(f"{self.path} has {len(self.landmarks)} frames but the clip has {len(frames)}")
        noise = np.random.default_rng(self.seed).normal(0.0, self.noise_px, self.landmarks.shape)
        landmarks = self.landmarks + noise
        return Detections(landmark_bbox(landmarks), landmarks, np.isfinite(landmarks).all(axis=(1, 2)))


BACKENDS: dict[str, type] = {"dlib": DlibTracker, "fan": FanTracker, "synthetic": SyntheticTracker}


def make_tracker(name: str, device: str = "cpu", **options: Any) -> Tracker:
    """Build a backend by name. ``device`` is used by ``fan``; ``dlib`` and ``synthetic`` run on the CPU."""
    if name not in BACKENDS:
        raise ValueError(f"unknown tracker '{name}': choose one of {', '.join(BACKENDS)}")
    cls = BACKENDS[name]
    kwargs = {"device": device, **options} if name == "fan" else options
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise ValueError(f"tracker '{name}': {err}") from None
    return cls(**kwargs)


# --- post-processing ----------------------------------------------------------------------------

def smooth_boxes(boxes: np.ndarray, found: np.ndarray, window: int, name: str = "clip") -> tuple[np.ndarray, np.ndarray]:
    """Fill frames without a face by interpolating between the nearest valid frames (held at the
    clip's ends), then median-filter each coordinate (window ``min(window, T)`` forced odd, scipy
    ``reflect`` padding). Returns the boxes and the mask of filled frames."""
    boxes = np.asarray(boxes, np.float64)
    valid = np.asarray(found, bool) & np.isfinite(boxes).all(axis=1)
    if not valid.any():
        raise TrackingError(f"{name}: no face found in any of its {len(boxes)} frames")
    t = np.arange(len(boxes))
    filled = np.stack([np.interp(t, t[valid], boxes[valid, k]) for k in range(4)], axis=1)
    size = min(window, len(boxes))
    if size % 2 == 0:
        size -= 1
    return median_filter(filled, size=(size, 1), mode="reflect"), ~valid


def square_boxes(boxes: np.ndarray, margin: float) -> np.ndarray:
    """Square boxes on the same centres, side ``max(w, h) * (1 + margin)``; NED's 256-px crop with
    a 70-px margin is ``margin = 70 / 186``."""
    boxes = np.asarray(boxes, np.float64)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = np.max(boxes[:, 2:] - boxes[:, :2], axis=1, keepdims=True) * (1 + margin) / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def _region(frame: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """Pixels ``[y0, y0+h) x [x0, x0+w)`` of a frame, black where they fall outside it."""
    out = np.zeros((h, w, frame.shape[2]), frame.dtype)
    height, width = frame.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + w, width), min(y0 + h, height)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    return out


def crop_frames(frames: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut each box (rounded to whole pixels) out of its frame and resize it to ``size``².

    Outside the image the crop is **black** (as NED's crops). Downscaling uses area averaging, so
    large faces do not alias. Also returns (T,2,3) matrices mapping frame points to crop points
    exactly as the pixels moved (``invert_matrices`` maps back)."""
    crops = np.empty((len(frames), size, size, frames.shape[-1]), frames.dtype)
    matrices = np.zeros((len(frames), 2, 3))
    for t, (frame, box) in enumerate(zip(frames, np.asarray(boxes, np.float64))):
        x0, y0 = int(round(box[0])), int(round(box[1]))
        w, h = max(1, int(round(box[2] - box[0]))), max(1, int(round(box[3] - box[1])))
        interp = cv2.INTER_AREA if max(w, h) > size else cv2.INTER_LINEAR
        crops[t] = cv2.resize(_region(frame, x0, y0, w, h), (size, size), interpolation=interp)
        # cv2.resize maps the region's extent [0, w] onto [0, size] (pixel centres at +0.5).
        sx, sy = size / w, size / h
        matrices[t] = [[sx, 0.0, -sx * x0], [0.0, sy, -sy * y0]]
    return crops, matrices


def transform_points(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Apply each frame's 2x3 matrix to its (N,2) points; NaN points stay NaN."""
    return np.einsum("tij,tnj->tni", matrices[:, :, :2], points) + matrices[:, None, :, 2]


def invert_matrices(matrices: np.ndarray) -> np.ndarray:
    """Crop→frame matrices from frame→crop ones (and vice versa)."""
    linear = np.linalg.inv(matrices[:, :, :2])
    return np.concatenate([linear, -linear @ matrices[:, :, 2:]], axis=2)


@dataclass
class TrackedClip:
    """Everything tracking gives a clip: crops plus the geometry to move between crop and frame."""

    crops: np.ndarray  # (T, S, S, 3) uint8
    boxes: np.ndarray  # (T, 4) smoothed, squared boxes the crops were cut from
    landmarks: np.ndarray  # (T, 68, 2) frame coordinates, NaN where no face was found
    landmarks_crop: np.ndarray  # (T, 68, 2) the same points in crop coordinates
    found: np.ndarray  # (T,) bool: the tracker found a face
    filled: np.ndarray  # (T,) bool: the box was filled from neighbouring frames
    matrices: np.ndarray  # (T, 2, 3) frame → crop


def track_clip(frames: np.ndarray, tracker: Tracker, crop_size: int, margin: float, window: int,
               name: str = "clip") -> TrackedClip:
    """Detect, smooth, square and crop one clip; errors name the clip."""
    frames = check_frames(frames, name)
    det = tracker.detect(frames)
    if len(det.found) != len(frames):
        raise TrackingError(f"{name}: tracker returned {len(det.found)} frames for {len(frames)}")
    smoothed, filled = smooth_boxes(det.boxes, det.found, window, name)
    if filled.any():
        log.warning("%s: no face in %d of %d frames, filled from neighbours", name, int(filled.sum()), len(filled))
    boxes = square_boxes(smoothed, margin)
    crops, matrices = crop_frames(frames, boxes, crop_size)
    return TrackedClip(crops, boxes, det.landmarks, transform_points(det.landmarks, matrices), det.found, filled, matrices)
