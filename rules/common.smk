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


# The SCMC metric may be trained on more actors than the manipulator (the paper: 36 and 6);
# every actor of either list is generated (synthetic corpus) and preprocessed.
SCMC_ACTORS = config["scmc"]["actors"] or config["actors"]
ALL_ACTORS = list(dict.fromkeys(config["actors"] + SCMC_ACTORS))


wildcard_constraints:
    actor="|".join(ALL_ACTORS),
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
    return [f for actor in ALL_ACTORS for f in actor_clip_files("video", actor)]


def corpus_root_of_outputs(wildcards, output):
    """The corpus root, derived from a declared clip path (<root>/<actor>/video/front/...)."""
    return str(Path(output.videos[0]).parents[5])


def uses_gpu():
    """GPU rules ask the scheduler for one when the device is cuda or auto (auto falls back
    to the CPU where the granted node has no CUDA)."""
    return 0 if config["device"] == "cpu" else 1


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
    return expand("work/preprocess/{actor}/expressions.parquet", actor=ALL_ACTORS)


def scmc_files():
    """The SCMC stage's products: both metrics' held-out figures and per-actor distances."""
    evaluations = expand("work/scmc/{name}.eval.json", name=["audio", "expression", "image", "finetune_expression", "finetune_image"])
    return evaluations + expand("work/scmc/dists_{visual}/{actor}/windows.parquet", visual=["expression", "image"], actor=config["actors"])


# SCMC trainers: the tables each modality reads, and the flags every trainer shares.
SCMC = config["scmc"]
MODALITY_INPUTS = {
    "audio": {},
    "expression": {"expressions": expand("work/preprocess/{actor}/expressions.parquet", actor=SCMC_ACTORS)},
    "image": {"shards": expand("work/preprocess/{actor}/{emotion}.parquet", actor=SCMC_ACTORS, emotion=config["emotions"])},
}


def training_flags(modality, stage):
    """The command-line flags shared by every SCMC trainer of one modality."""
    settings = SCMC[f"{stage}_{modality}"]
    inputs = MODALITY_INPUTS[modality]
    flags = [
        f"--steps {settings['steps']} --lr {settings['lr']} --batch-size {SCMC['batch_size']}",
        f"--seed {SCMC['seed']} --checkpoint-every {SCMC['checkpoint_every']} --eval-batches {SCMC['eval_batches']}",
        f"--sample-rate {SCMC['sample_rate']} --image-crop {SCMC['image_crop']} --tau {SCMC['image_tau']}",
    ]
    if "image_size" in settings:
        flags.append(f"--image-size {settings['image_size']}")
    if stage == "finetune":
        flags.append(f"--warmup {settings['warmup']} --consistency-weight {settings['consistency_weight']}")
    flags += [f"--{key} {' '.join(paths)}" for key, paths in inputs.items()]
    return " ".join(flags)
