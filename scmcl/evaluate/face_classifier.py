"""An image classifier on the corpus's aligned faces, the evaluation's judge of a video: which
emotion a face shows, and whose face it is.

One small CNN with two heads (emotion, actor) over a shared embedding. The emotion head gives
the edited videos' emotion accuracy; the embedding gives identity drift (cosine distance to the
actor's mean embedding over its training frames, kept in the model file) and the actor head the
identity accuracy. It trains on the masked aligned faces (``faces_aligned``) of every clip
whose id is not in ``test_clips`` and reports its accuracy on the held-out real clips, so the
accuracy on an edit can be read against what it scores on real faces it has not seen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from scmcl.device import resolve_device
from scmcl.io.clip_data import FACES_ALIGNED, clip_id, read_clip_stack, rerun
from scmcl.renderer.windows import actor_clips
from scmcl.train.loop import Contents, load_model, publish_model, seed_everything

CONTENTS = Contents("evaluate", "face_classifier", None)
#: Training-time jitter: shifts of up to this many pixels and a brightness gain of 1 ± this.
SHIFT_PX, GAIN = 3, 0.1


@dataclass(frozen=True)
class FaceClassifierSettings:
    """The config section ``evaluate.face_classifier``; no defaults, the schema holds them."""

    size: int
    widths: tuple[int, ...]
    steps: int
    batch_size: int
    lr: float
    seed: int


class FaceClassifier(nn.Module):
    """(B, 3, size, size) faces in [0, 1] → (emotion logits, actor logits, unit embedding)."""

    def __init__(self, emotions: Sequence[str], actors: Sequence[str], size: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.emotions, self.actors, self.size, self.widths = list(emotions), list(actors), int(size), tuple(widths)
        layers: list[nn.Module] = []
        channels = 3
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.GroupNorm(min(8, width), width), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.emotion_head = nn.Linear(channels, len(self.emotions))
        self.actor_head = nn.Linear(channels, len(self.actors))
        # Each actor's mean unit embedding over its training frames: identity drift is measured to it.
        self.register_buffer("actor_centres", torch.zeros(len(self.actors), channels))

    def forward(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.features(faces * 2 - 1)
        return self.emotion_head(features), self.actor_head(features), F.normalize(features, dim=1)


def resized(faces: np.ndarray, size: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 faces → (T, 3, size, size) float in [0, 1], area-averaged."""
    images = torch.from_numpy(np.array(faces, copy=True)).permute(0, 3, 1, 2).float() / 255
    return F.interpolate(images, size=(size, size), mode="area") if images.shape[-1] != size else images


@dataclass(frozen=True)
class Judged:
    """Per frame: the called emotion and actor (indices into the model's lists) and the cosine
    similarity of the face's embedding to the claimed actor's centre."""

    emotion: np.ndarray
    actor: np.ndarray
    identity: np.ndarray


@torch.no_grad()
def judge(model: FaceClassifier, faces: np.ndarray, actor: str, batch: int = 256) -> Judged:
    """The model's calls on (T, H, W, 3) uint8 aligned faces said to be ``actor``'s."""
    if actor not in model.actors:
        raise ValueError(f"the face classifier knows the actors {', '.join(model.actors)}, not {actor}: "
                         "retrain it with this actor in `actors`")
    device = model.actor_centres.device
    centre = model.actor_centres[model.actors.index(actor)]
    emotion, who, identity = [], [], []
    for start in range(0, len(faces), batch):
        e, a, embedding = model(resized(faces[start:start + batch], model.size).to(device))
        emotion.append(e.argmax(1).cpu())
        who.append(a.argmax(1).cpu())
        identity.append((embedding @ centre).cpu())
    return Judged(*(torch.cat(part).numpy() for part in (emotion, who, identity)))


def _load_faces(clips, size: int) -> tuple[torch.Tensor, list[int]]:
    stacks = [resized(read_clip_stack(d, FACES_ALIGNED, rerun("shard")), size) for d in clips.directory]
    return torch.cat(stacks), [len(s) for s in stacks]


def _jittered(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    dx, dy = (int(v) for v in rng.integers(-SHIFT_PX, SHIFT_PX + 1, size=2))
    shifted = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
    gains = torch.from_numpy(rng.uniform(1 - GAIN, 1 + GAIN, size=(len(images), 1, 1, 1)).astype(np.float32))
    return (shifted * gains.to(images.device)).clamp(0, 1)


def train_face_classifier(shards: Sequence[str | os.PathLike], emotions: Sequence[str], test_clips: Sequence[str],
                          settings: FaceClassifierSettings, device: str) -> tuple[FaceClassifier, dict]:
    """Train on the aligned faces of every shard table's clips whose id is not in ``test_clips``;
    return the model (eval mode, on ``device``) and its report on the held-out clips."""
    train, test = actor_clips(shards, test_clips)
    train, test = train[train.emotion.isin(emotions)], test[test.emotion.isin(emotions)]
    missing = [e for e in emotions if e not in set(train.emotion)]
    if missing:
        raise ValueError(f"face classifier: no training clip of {', '.join(missing)} (held out: {', '.join(test_clips)})")
    if test.empty:
        raise ValueError(f"face classifier: no clip has a held-out id ({', '.join(test_clips)}), so there is no held-out accuracy")
    actors = sorted(set(train.actor))
    torch_device = resolve_device(device)
    rng = seed_everything(settings.seed)
    model = FaceClassifier(emotions, actors, settings.size, settings.widths).to(torch_device).train()
    faces, lengths = _load_faces(train, settings.size)
    emotion_labels = torch.from_numpy(np.repeat([list(emotions).index(e) for e in train.emotion], lengths))
    actor_labels = torch.from_numpy(np.repeat([actors.index(a) for a in train.actor], lengths))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    for _ in range(settings.steps):
        batch = torch.from_numpy(rng.integers(len(faces), size=settings.batch_size))
        e, a, _ = model(_jittered(faces[batch], rng).to(torch_device))
        loss = F.cross_entropy(e, emotion_labels[batch].to(torch_device)) + F.cross_entropy(a, actor_labels[batch].to(torch_device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for i in range(len(actors)):
            own = faces[actor_labels == i]
            embeddings = torch.cat([model(own[s:s + 256].to(torch_device))[2] for s in range(0, len(own), 256)])
            model.actor_centres[i] = F.normalize(embeddings.mean(0), dim=0)
    report = _report(model, test)
    report |= {"train_clips": len(train), "train_frames": len(faces), "final_loss": loss.item()}
    return model, report


def _report(model: FaceClassifier, test) -> dict:
    """Held-out frame accuracy of both heads, per true emotion, and the identity similarity."""
    hits, per_emotion, identity, actor_hits, frames = 0, {}, [], 0, 0
    for row in test.itertuples():
        judged = judge(model, read_clip_stack(row.directory, FACES_ALIGNED, rerun("shard")), row.actor)
        right = int((judged.emotion == model.emotions.index(row.emotion)).sum())
        hits, frames = hits + right, frames + len(judged.emotion)
        seen = per_emotion.setdefault(row.emotion, [0, 0])
        seen[0], seen[1] = seen[0] + right, seen[1] + len(judged.emotion)
        actor_hits += int((judged.actor == model.actors.index(row.actor)).sum())
        identity.append(judged.identity)
    return {"held_out_clips": [clip_id(r.actor, r.emotion, r.level, r.clip) for r in test.itertuples()],
            "emotions": model.emotions, "actors": model.actors, "chance": 1 / len(model.emotions),
            "emotion_accuracy": hits / frames, "actor_accuracy": actor_hits / frames, "frames": frames,
            "identity_similarity": float(np.concatenate(identity).mean()),
            "per_emotion": {e: right / total for e, (right, total) in per_emotion.items()}}


#: The constructor arguments a face classifier file stores.
SHAPE = ("emotions", "actors", "size", "widths")


def save_face_classifier(path: str | os.PathLike, model: FaceClassifier, report: dict) -> None:
    """A weights-only torch file headed like every published weight file (``load_published``)."""
    shape = {"emotions": model.emotions, "actors": model.actors, "size": model.size, "widths": list(model.widths)}
    publish_model(path, CONTENTS, model, shape, report)


def load_face_classifier(path: str | os.PathLike, device: str = "cpu") -> tuple[FaceClassifier, dict]:
    """The model (eval mode, on ``device``) and report of ``save_face_classifier``'s file."""
    return load_model(path, CONTENTS, FaceClassifier, SHAPE, "a face classifier",
                      "give the file train_face_classifier's rule wrote", device)
