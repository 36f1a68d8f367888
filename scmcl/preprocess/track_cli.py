"""``scmcl track``: boxes and 68 landmarks of a photo or video, one Parquet row per frame."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from scmcl.options import add_settings

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def read_media(path: Path) -> np.ndarray:
    """A photo as a one-frame stack, or every decoded frame of a video; uint8 RGB (T,H,W,3)."""
    if not path.is_file():
        raise FileNotFoundError(f"no such image or video: {path}")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        from scmcl.io.media import read_frames

        return read_frames(path)
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)[None]


def _track(args: argparse.Namespace) -> int:
    from scmcl.io.atomic import write_parquet
    from scmcl.preprocess.tracking import detections_table, make_tracker

    frames = read_media(Path(args.input))
    det = make_tracker(args.backend, args.device).detect(frames)
    write_parquet(detections_table(det), args.out)
    print(f"track: face in {int(det.found.sum())}/{len(det.found)} frames of {args.input} -> {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("track", help="face boxes and 68 landmarks of a photo or video (Parquet, one row per frame)")
    p.add_argument("input", metavar="IMAGE_OR_VIDEO", help="a .png/.jpg photo or any video ffmpeg decodes")
    p.add_argument("--backend", required=True, choices=("dlib", "fan"))
    p.add_argument("--out", required=True, help="output .parquet")
    add_settings(p, "", keys=["device"])
    p.set_defaults(func=_track)
