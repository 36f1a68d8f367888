"""One row of the evaluation (issue 12): the videos of one method (the unedited source, the
naive edit, NED, NED+SCMCL, or the paired ground truth itself) for one actor's test clip in each
target emotion, each scored against that emotion's paired ground truth (the same sentence,
timing and head motion shown in the target emotion, preprocessed like every clip).

Per video:

- ``expression_error``: the driving expressions' mean per-frame L2 distance to the truth's (50
  values, no jaw), and ``expression_accuracy``, the fraction of frames the expression classifier
  calls the target emotion;
- ``image_accuracy``: the fraction of the video's aligned faces the face classifier calls the
  target emotion; ``identity_similarity`` (cosine of each face's embedding to the actor's mean
  training embedding; 1 − it is the identity drift) and ``identity_accuracy`` (faces it calls
  the actor);
- ``m_lmd`` (px): mouth-landmark distance to the truth video, both tracked by dlib; ``psnr``
  (dB) and ``ssim`` on the face region against the truth, both cut with the truth's clip;
- ``jitter`` (px): the landmarks' mean second difference;
- ``sync_source``: correlation of the mouth-opening track with the source video's;
  ``sync_audio``: with the audio's loudness envelope.

The truth row leaves its comparisons with itself (M-LMD, PSNR, SSIM) empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from scmcl.evaluate.face_classifier import FaceClassifier, judge
from scmcl.evaluate.faces import clip_faces
from scmcl.evaluate.motion import correlation, jitter, loudness, mouth_distance, mouth_opening, track
from scmcl.io.atomic import atomic_path
from scmcl.io.clip_data import expression_clips, find_clip, read_expressions
from scmcl.io.media import probe, read_audio, read_frames
from scmcl.manipulator.ablation import expression_distance
from scmcl.manipulator.classifier import EmotionClassifier, predict
from scmcl.renderer.images import face_psnr_ssim

ROWS = ("source", "naive", "ned", "scmcl", "truth")
FIGURES = ("expression_error", "expression_accuracy", "image_accuracy", "identity_similarity", "identity_accuracy",
           "m_lmd", "psnr", "ssim", "jitter", "sync_source", "sync_audio")
#: The audio's rate for the loudness envelope.
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Case:
    """One video of a row: its target emotion, the video, the expression table that drove it
    and the emotion its clip has there (the source's is neutral), the clip whose crops cut its
    faces, and the truth's video and preprocessed clip."""

    emotion: str
    video: str
    driving: str
    driving_emotion: str
    faces_clip: str
    truth_video: str
    truth_clip: str


@lru_cache(maxsize=None)
def _clips(table: str) -> dict[tuple, np.ndarray]:
    """An expression table's clips, read once per table for all the row's videos."""
    return expression_clips(read_expressions(table))


@lru_cache(maxsize=None)
def _tracked(video: str) -> tuple[np.ndarray, np.ndarray]:
    """A video's frames and dlib track, made once per process: the source video is every case
    of the source row, and each truth video is read by its case and by the M-LMD beside it."""
    frames = read_frames(video)
    return frames, track(frames)


def _faces11(faces: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2).float() / 127.5 - 1


class Scorer:
    """The figures of the videos of one actor's test clip; the source's tracks are made once."""

    def __init__(self, actor: str, clip: str, source_video: str, truth_expressions: str, face_model: FaceClassifier,
                 expression_model: EmotionClassifier) -> None:
        self.actor, self.clip, self.truth_expressions = actor, clip, truth_expressions
        self.face_model, self.expression_model = face_model, expression_model
        frames, points = _tracked(str(Path(source_video).resolve()))
        self.source_opening = mouth_opening(points)
        self.envelope = loudness(read_audio(source_video, SAMPLE_RATE), SAMPLE_RATE, probe(source_video).fps, len(frames))

    def score(self, case: Case) -> dict[str, float]:
        (frames, points), (truth_frames, truth_points) = (_tracked(str(Path(video).resolve())) for video in (case.video, case.truth_video))
        driving = find_clip(_clips(case.driving), self.actor, case.driving_emotion, self.clip, "driving", case.driving)
        truth51 = find_clip(_clips(self.truth_expressions), self.actor, case.emotion, self.clip, "paired truth",
                            self.truth_expressions)
        n = min(len(driving), len(truth51))
        called = np.array(predict(self.expression_model, driving)[0])
        judged = judge(self.face_model, clip_faces(frames, case.faces_clip)[0], self.actor)
        figures = {"expression_error": expression_distance(driving[:n], truth51[:n]),
                   "expression_accuracy": float((called == case.emotion).mean()),
                   "image_accuracy": float((judged.emotion == self.face_model.emotions.index(case.emotion)).mean()),
                   "identity_similarity": float(judged.identity.mean()),
                   "identity_accuracy": float((judged.actor == self.face_model.actors.index(self.actor)).mean()),
                   "m_lmd": float("nan"), "psnr": float("nan"), "ssim": float("nan"), "jitter": jitter(points),
                   "sync_source": correlation(mouth_opening(points), self.source_opening),
                   "sync_audio": correlation(mouth_opening(points), self.envelope)}
        if Path(case.video).resolve() != Path(case.truth_video).resolve():
            fake, masks = clip_faces(frames, case.truth_clip)
            real, _ = clip_faces(truth_frames, case.truth_clip)
            psnr, ssim = face_psnr_ssim(_faces11(fake), _faces11(real), torch.from_numpy(masks).float())
            figures |= {"m_lmd": mouth_distance(points, truth_points), "psnr": psnr.mean().item(), "ssim": ssim.mean().item()}
        return figures


def score_row(row: str, actor: str, clip: str, cases: Sequence[Case], scorer: Scorer, out: str | Path) -> pd.DataFrame:
    """Score each case and write one TSV line per target emotion; returns the table."""
    if row not in ROWS:
        raise ValueError(f"evaluation row {row} is not one of {', '.join(ROWS)}")
    table = pd.DataFrame([{"row": row, "actor": actor, "clip": clip, "emotion": case.emotion, **scorer.score(case)}
                          for case in cases])
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return table
