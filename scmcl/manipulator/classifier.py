"""An emotion classifier on the 51-d expression vector: the manipulator's judge (does an edit
read as its target emotion?) and later the evaluation stage's.

It classifies windows of ``window`` frames, not single frames: a frame's expression mixes the
emotion with the viseme being spoken, and a short window averages the speech out the way the
manipulator's own windows do. A frame's probabilities are the mean over every window covering
it, so an edited clip still gets one label per frame. Inputs are standardised with statistics of
the training frames, kept in the model (and its file) so a judge applies them to every input.

The held-out clips are the config's ``test_clips``, the ids every trainer excludes: MEAD's
neutral and emotional clips of one id say the same sentence, so holding an id out keeps its
sentence unseen in every emotion, which is what the edits of held-out neutral clips are judged on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from scmcl.device import resolve_device
from scmcl.io.clip_data import clip_id, expression_clips, read_expressions
from scmcl.manipulator.networks import FRAME_SIZE
from scmcl.train.loop import Contents, load_model, publish_model, seed_everything

CONTENTS = Contents("manipulator", "classifier", None)


@dataclass(frozen=True)
class ClassifierSettings:
    """The config section ``manipulator.classifier``; no defaults, the schema holds them."""

    window: int
    hidden_widths: tuple[int, ...]
    dropout: float
    noise: float
    steps: int
    batch_size: int
    lr: float
    seed: int

    @classmethod
    def from_config(cls, config: dict) -> ClassifierSettings:
        """From a validated config (``config["manipulator"]["classifier"]``)."""
        section = config["manipulator"]["classifier"]
        return cls(**{**section, "hidden_widths": tuple(section["hidden_widths"])})


class EmotionClassifier(nn.Module):
    """(B, window, 51) windows → (B, emotions) logits; the standardisation is part of the model."""

    def __init__(self, emotions: Sequence[str], window: int, hidden_widths: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.emotions, self.window, self.hidden_widths = list(emotions), int(window), tuple(hidden_widths)
        self.dropout = float(dropout)
        self.register_buffer("mean", torch.zeros(FRAME_SIZE))
        self.register_buffer("std", torch.ones(FRAME_SIZE))
        layers: list[nn.Module] = []
        size = window * FRAME_SIZE
        for width in hidden_widths:
            layers += [nn.Linear(size, width), nn.ReLU(), nn.Dropout(self.dropout)]
            size = width
        self.net = nn.Sequential(*layers, nn.Linear(size, len(emotions)))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.net(((windows - self.mean) / self.std).flatten(1))


def _windows(frames: np.ndarray, window: int) -> np.ndarray:
    """Every window of a (T,51) sequence at hop 1, (max(T-window+1, 1), window, 51), as a
    writable copy torch can take; a clip shorter than a window is padded with its last frame."""
    if len(frames) < window:
        frames = np.concatenate([frames, np.repeat(frames[-1:], window - len(frames), axis=0)])
    return np.lib.stride_tricks.sliding_window_view(frames, window, axis=0).transpose(0, 2, 1).copy()


@torch.no_grad()
def predict(model: EmotionClassifier, frames51: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Per-frame labels and (T, emotions) probabilities of one clip's (T,51) expression frames:
    each frame's probabilities are the mean over the windows that cover it."""
    frames51 = np.asarray(frames51, np.float32)
    if frames51.ndim != 2 or frames51.shape[1] != FRAME_SIZE or not len(frames51):
        raise ValueError(f"expected (T, {FRAME_SIZE}) expression frames, got {frames51.shape}")
    model.eval()
    device = model.mean.device
    windows = torch.from_numpy(_windows(frames51, model.window)).to(device)
    window_probs = torch.softmax(model(windows), dim=1).cpu().numpy()
    length = max(len(frames51), model.window)  # a padded short clip's one window is longer than it
    total, count = np.zeros((length, len(model.emotions))), np.zeros(length)
    for start, p in enumerate(window_probs):
        total[start:start + model.window] += p
        count[start:start + model.window] += 1
    probs = total[: len(frames51)] / count[: len(frames51), None]
    return [model.emotions[i] for i in probs.argmax(1)], probs


def _clips(expression_tables: Iterable, emotions: Sequence[str]) -> list[tuple[tuple, np.ndarray]]:
    """(clip key, (T,51) frames) of every clip of a configured emotion, in key order."""
    clips = {}
    for table in expression_tables:
        rows = read_expressions(table)
        clips |= expression_clips(rows[rows.emotion.isin(emotions)])
    return sorted(clips.items(), key=lambda clip: clip[0])


def train_classifier(expression_tables: Iterable[str | os.PathLike | pd.DataFrame], emotions: Sequence[str],
                     test_clips: Sequence[str], settings: ClassifierSettings,
                     device: str) -> tuple[EmotionClassifier, dict]:
    """Train on every clip of the tables whose id is not in ``test_clips``; return the model (in
    eval mode, on ``device``) and its report on the held-out clips (JSON-serialisable)."""
    emotions, test_clips = list(emotions), sorted(test_clips)
    clips = _clips(expression_tables, emotions)
    train = [(key, frames) for key, frames in clips if key[3] not in test_clips]
    test = [(key, frames) for key, frames in clips if key[3] in test_clips]
    untrained = [e for e in emotions if not any(key[1] == e for key, _ in train)]
    if untrained:
        raise ValueError(f"emotion classifier: no training clip of {', '.join(untrained)} "
                         f"(held out: {', '.join(test_clips)})")
    if not test:
        raise ValueError(f"emotion classifier: no clip has a held-out id ({', '.join(test_clips)}), "
                         "so there is no held-out accuracy")
    torch_device = resolve_device(device)
    rng = seed_everything(settings.seed)
    model = EmotionClassifier(emotions, settings.window, settings.hidden_widths, settings.dropout)
    frames = np.concatenate([f for _, f in train])
    model.mean.copy_(torch.from_numpy(frames.mean(0)))
    std = frames.std(0)
    model.std.copy_(torch.from_numpy(np.where(std > 1e-6, std, 1.0).astype(np.float32)))  # unused components stay 0
    model.to(torch_device).train()
    per_clip = [_windows(f, settings.window) for _, f in train]
    windows = torch.from_numpy(np.concatenate(per_clip)).to(torch_device)
    labels = np.concatenate([np.full(len(w), emotions.index(key[1])) for (key, _), w in zip(train, per_clip)])
    labels = torch.from_numpy(labels).to(torch_device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    for _ in range(settings.steps):
        batch = torch.from_numpy(rng.integers(len(windows), size=settings.batch_size)).to(torch_device)
        inputs = windows[batch]
        inputs = inputs + settings.noise * model.std * torch.randn_like(inputs)  # a training sentence is not memorised
        loss = nn.functional.cross_entropy(model(inputs), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    report = _report(model, test, test_clips)
    report |= {"train_clips": len(train), "train_frames": len(frames), "final_loss": loss.item()}
    return model, report


def _report(model: EmotionClassifier, test: list[tuple[tuple, np.ndarray]], test_clips: list[str]) -> dict:
    """Held-out accuracy per frame (overall and per true emotion), the frame confusion matrix
    (rows true, columns predicted, in ``emotions`` order) and the clip accuracy (the argmax of a
    clip's mean probabilities)."""
    emotions = model.emotions
    confusion = np.zeros((len(emotions), len(emotions)), int)
    clip_hits, clips = 0, []
    for key, frames in test:
        _, probs = predict(model, frames)
        truth = emotions.index(key[1])
        np.add.at(confusion[truth], probs.argmax(1), 1)
        called = emotions[int(probs.mean(0).argmax())]
        clip_hits += called == key[1]
        clips.append({"clip": clip_id(*key), "called": called})
    per_emotion = {e: {"frames": int(confusion[i].sum()),
                       "accuracy": float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None}
                   for i, e in enumerate(emotions)}
    return {"test_clips": test_clips, "emotions": emotions, "chance": 1 / len(emotions),
            "accuracy": float(np.trace(confusion) / confusion.sum()), "frames": int(confusion.sum()),
            "per_emotion": per_emotion, "confusion": confusion.tolist(),
            "clip_accuracy": clip_hits / len(test), "clips": clips}


#: The constructor arguments a classifier file stores.
SHAPE = ("emotions", "window", "hidden_widths", "dropout")


def save_classifier(path: str | os.PathLike, model: EmotionClassifier, report: dict) -> None:
    """A weights-only torch file headed like ``TrainLoop.publish``'s (``load_published`` checks
    it), holding the weights, what rebuilds the model, and the report it was trained with."""
    shape = {"emotions": model.emotions, "window": model.window, "hidden_widths": list(model.hidden_widths), "dropout": model.dropout}
    publish_model(path, CONTENTS, model, shape, report)


def load_classifier(path: str | os.PathLike, device: str = "cpu") -> tuple[EmotionClassifier, dict]:
    """The model (eval mode, on ``device``) and report of ``save_classifier``'s file; a file of
    anything else is one ``WeightFileError`` naming it."""
    return load_model(path, CONTENTS, EmotionClassifier, SHAPE, "an emotion classifier",
                      "give the file train_classifier's rule wrote", device)
