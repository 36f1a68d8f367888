# Shared Python of the workflow: config validation, the clip list, resource presets.
# Cheap by design: it runs again inside every cluster job (no dataset scanning here).
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from scmcl.config import ConfigError, validate_config
from scmcl.corpus.layout import audio_path, clip_keys, groundtruth_path, video_path

try:
    validate_config(config)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None


wildcard_constraints:
    actor="|".join(config["actors"]),
    emotion="|".join(config["emotions"]),


# The clips of one actor, from the config alone (MEAD's layout, clip ids 001..N).
CLIP_KEYS = clip_keys(config["emotions"], config["levels"], config["synthetic"]["sentences"])
ROOT = config["data_root"]
PRE = config["preprocess"]


def actor_clip_files(kind, actor="{actor}"):
    """Paths of every clip of an actor; kind is video, audio or groundtruth."""
    path_of = {"video": video_path, "audio": audio_path, "groundtruth": groundtruth_path}[kind]
    return [str(path_of(ROOT, actor, key)) for key in CLIP_KEYS]


def corpus_files():
    """What the corpus stage provides to the rest of the workflow."""
    if config["dataset"] != "synthetic":
        return []
    return [f for actor in config["actors"] for f in actor_clip_files("video", actor)]


def corpus_root_of_outputs(wildcards, output):
    """The corpus root, derived from a declared clip path (<root>/<actor>/video/front/...)."""
    return str(Path(output.videos[0]).parents[5])


def uses_gpu():
    return 1 if config["device"].startswith("cuda") else 0


# Resource presets grow with the retry attempt, so a SLURM time-out or OOM retries bigger.
def runtime_min(base):
    return lambda wildcards, attempt: base * attempt


def mem_mb(base):
    return lambda wildcards, attempt: base * attempt


def dataset_root(wildcards):
    """The dataset root; only read (the synthetic corpus is generated there by its own rules)."""
    return config["data_root"]


def manifest_command():
    """`scmcl corpus scan` reads MEAD's layout; RAVDESS goes through its name mapping."""
    return "ravdess" if config["dataset"] == "ravdess" else "scan"


def shard_clip_root(wildcards, output):
    """Per-clip outputs of a shard live next to its table: work/preprocess/<actor>/<emotion>/."""
    return str(Path(output[0]).with_suffix(""))


def optional_flag(flag, value):
    return f"{flag} {value}" if value else ""


def preprocess_files():
    return expand("work/preprocess/{actor}/expressions.parquet", actor=config["actors"])
