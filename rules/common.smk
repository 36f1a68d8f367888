# Shared Python of the workflow: config validation, the clip list, resource presets.
# Cheap by design: it runs again inside every cluster job (no dataset scanning here).
import os
import re
import sys
from pathlib import Path
from typing import Callable, NamedTuple

sys.path.insert(0, workflow.basedir)

from scmcl.config import ConfigError, configured_paths, validate_config
from scmcl.corpus.cli import CLIP_SETTINGS
from scmcl.corpus.layout import ClipKey, audio_path, clip_keys, groundtruth_path, video_path
from scmcl.corpus.listing import listing_digest
from scmcl.options import settings_flags
from scmcl.scmc.cli import TRAINER_SETTINGS

try:
    validate_config(config)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None


def missing_files():
    """Set files of the config that do not exist: a typo would otherwise skip its metric, or fail a
    job hours in. Checked while the DAG is built (dry runs too), before any job or deletion."""
    generated = {"data_root", "flame.model", "flame.landmark_embedding"} if config["dataset"] == "synthetic" else set()
    return [f"config key {key}: {path} does not exist: fix the path, or set it to \"\" (not used)"
            for key, path in configured_paths(config) if key not in generated and not os.path.exists(path)]


MISSING_FILES = missing_files()
if MISSING_FILES:
    raise WorkflowError("; ".join(MISSING_FILES))


onstart:
    # Before the first job, and so before Snakemake deletes the outputs it will redo; only here is
    # it known whether the jobs run on this machine (a SLURM login node needs no CUDA of its own).
    if config["device"].startswith("cuda") and workflow.local_exec:
        import torch

        if not torch.cuda.is_available():
            raise WorkflowError(f"device: {config['device']}, but this machine has no CUDA device for the jobs: run with --config device=cpu "
                                "(or device=auto), or submit the jobs to GPU nodes (--profile profiles/slurm)")


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
    """The tree's root, derived from the first declared clip path (<root>/<actor>/video/front/...)."""
    return str(Path(output[0]).parents[5])


# The paired ground truth (synthetic corpus only): each actor's neutral test clips rendered in every
# other configured emotion at the last configured level (`scmcl corpus paired`), in a MEAD-layout
# tree of its own, then scanned and preprocessed like the corpus (PREPROCESS_TREES below).
PAIRED_ROOT = "work/paired/corpus"
#: The clip every edit starts from (edit.source; MEAD's neutral level 1 by default), and the
#: emotions it is edited into.
EDIT_SOURCE = ClipKey(config["edit"]["source"]["emotion"], config["edit"]["source"]["level"], "{clip}")
if EDIT_SOURCE.emotion not in config["emotions"]:
    raise WorkflowError(f"edit.source.emotion {EDIT_SOURCE.emotion} is not in emotions ({', '.join(config['emotions'])}): "
                        "an edit starts from a preprocessed clip of a configured emotion")
EDIT_EMOTIONS = [e for e in config["emotions"] if e != EDIT_SOURCE.emotion]
#: Edits are of test clips only: their ids, any text (RAVDESS's and a user's need not be numbers).
TEST_CLIP = "|".join(re.escape(clip) for clip in config["test_clips"])
PAIRED_EMOTIONS = EDIT_EMOTIONS
PAIRED_LEVEL = config["levels"][-1]


def paired_clip_file(kind, actor="{actor}", emotion="{emotion}", clip="{clip}"):
    """The path of one paired clip's video, audio or ground truth (wildcards by default)."""
    path_of = {"video": video_path, "audio": audio_path, "groundtruth": groundtruth_path}[kind]
    return str(path_of(PAIRED_ROOT, actor, ClipKey(emotion, PAIRED_LEVEL, clip)))


def paired_clip_videos():
    """Every paired clip: actors × non-neutral emotions × test clips, at the last level."""
    return [paired_clip_file("video", a, e, c) for a in config["actors"] for e in PAIRED_EMOTIONS for c in config["test_clips"]]


def paired_root(wildcards):
    """The paired tree's root (a function, as the corpus's `dataset_root`: a param, not a file prefix)."""
    return PAIRED_ROOT


def no_listing(wildcards):
    """The paired tree is made by the workflow: its clips are file inputs of the scan, no digest."""
    return ""


def slurm_profile_unset():
    """Under profiles/slurm (its default partition is the $SCMCL_SLURM_PARTITION placeholder), the
    variables it needs that are unset; None without that profile."""
    defaults = workflow.resource_settings.default_resources
    partition = defaults.get("slurm_partition") if defaults is not None else None
    if partition is None or "SCMCL_SLURM" not in str(partition.raw):
        return None
    needed = ["SCMCL_SLURM_PARTITION", "SCMCL_SLURM_ACCOUNT"] + (["SCMCL_SLURM_GPU_PARTITION"] if config["device"] != "cpu" else [])
    return [name for name in needed if name not in os.environ]


# Stop at once instead of submitting a literal "$SCMCL_SLURM_PARTITION".
SLURM_UNSET = slurm_profile_unset()
if SLURM_UNSET:
    raise WorkflowError(f"profiles/slurm needs {', '.join(SLURM_UNSET)}: export {' '.join(f'{name}=...' for name in SLURM_UNSET)} "
                        "(partitions from `sinfo -s`, your account from `sacctmgr show assoc user=$USER`; README, Cluster)")
SLURM_PROFILE = SLURM_UNSET is not None
SLURM_GPU_PARTITION = os.environ.get("SCMCL_SLURM_GPU_PARTITION", "")


def flags(section, keys=None, exclude=()):
    """A stage's settings as the flags of its `scmcl` sub-command (defaults live in the schema)."""
    return settings_flags(config, section, keys, exclude)


#: Torch threads of every training and network job (the schema says why the demo uses 1).
THREADS = config["threads"]
#: Trainers (and what they wait on) go first: the edits wait on them, while the scores, the
#: paired truth and the curves can fill a core beside them.
TRAIN_PRIORITY = 1


def gpu_resources():
    """A GPU rule asks the scheduler for one when the device is cuda or auto (auto falls back to
    the CPU where the granted node has no CUDA); under profiles/slurm it then goes to the GPU
    partition, so no profile keeps a list of GPU rules. The device is a resource, not a param:
    where a job runs does not change what it writes, so switching it reruns nothing."""
    if config["device"] == "cpu":
        return {"gpu": 0, "device": "cpu"}
    return {"gpu": 1, "device": config["device"], **({"slurm_partition": SLURM_GPU_PARTITION} if SLURM_PROFILE else {})}


# Resource presets grow with the retry attempt, so a SLURM time-out or OOM retries bigger.
def runtime_min(base):
    return lambda wildcards, attempt: base * attempt


def mem_mb(base):
    return lambda wildcards, attempt: base * attempt


def dataset_root(wildcards):
    """The dataset root; only read (the synthetic corpus is generated there by its own rules)."""
    return config["data_root"]


def dataset_listing(wildcards):
    """Digest of the names, sizes and mtimes of a user dataset's clips (no video is opened);
    the synthetic corpus is a file input of the manifest rule instead."""
    if config["dataset"] == "synthetic":
        return ""
    return listing_digest(config["data_root"], ALL_ACTORS, layout=config["dataset"])


def manifest_command():
    """`scmcl corpus scan` reads MEAD's layout; RAVDESS goes through its name mapping."""
    return "ravdess" if config["dataset"] == "ravdess" else "scan"


def shard_clip_root(wildcards, output):
    """Per-clip outputs of a shard live next to its table: work/preprocess/<actor>/<emotion>/."""
    return str(Path(output[0]).with_suffix(""))


class Tree(NamedTuple):
    """A MEAD-layout tree that the same rule definitions (rules/preprocess.smk) scan into a manifest
    and preprocess into per-(actor, emotion) shards and per-actor expression tables."""

    name: str  # "corpus" or "paired"
    root: Callable  # wildcards -> the tree's root (the scan's root, the synthetic tracker's data root)
    clips: list  # its clip videos made by the workflow (the scan's file inputs; none for a user's dataset)
    listing: Callable  # wildcards -> digest of a user's dataset tree ("" when its clips are inputs)
    command: str  # `scmcl corpus <command>`: scan (MEAD layout) or ravdess
    actors: list
    emotions: list
    levels: list

    @property
    def manifest(self):
        return f"work/{self.name}/manifest.parquet"

    @property
    def preprocess(self):
        """Folder of the shards: work/preprocess for the corpus, work/<name>/preprocess otherwise."""
        return "work/preprocess" if self.name == "corpus" else f"work/{self.name}/preprocess"

    def rule(self, stage):
        """Rule names: corpus_manifest, preprocess_shard, expression_table for the corpus;
        paired_manifest, paired_preprocess_shard, paired_expression_table for the paired tree."""
        if stage == "manifest":
            return f"{self.name}_manifest"
        return stage if self.name == "corpus" else f"{self.name}_{stage}"

    @property
    def priority(self):
        """The corpus feeds every trainer; the paired truth only the scores, so it can wait."""
        return TRAIN_PRIORITY if self.name == "corpus" else 0


CORPUS_TREE = Tree("corpus", dataset_root, corpus_files(), dataset_listing, manifest_command(), ALL_ACTORS,
                   config["emotions"], config["levels"])
PAIRED_TREE = Tree("paired", paired_root, paired_clip_videos(), no_listing, "scan", config["actors"],
                   PAIRED_EMOTIONS, [PAIRED_LEVEL])
PREPROCESS_TREES = [CORPUS_TREE] + ([PAIRED_TREE] if config["dataset"] == "synthetic" else [])


def actor_identity(wildcards):
    """The shard's actor identity (rule actor_identity) when the fit backend reconstructs; DECA
    predicts its own shapes."""
    if config["preprocess"]["reconstruction"] != "fit":
        return []
    return f"work/preprocess/{wildcards.actor}/identity.json"


def preprocess_files():
    return expand("work/preprocess/{actor}/expressions.parquet", actor=ALL_ACTORS)


def paired_files():
    """The paired ground truth of every actor's test clips, preprocessed like the corpus: one
    expression table per actor (work/paired/preprocess/<actor>/expressions.parquet; per clip
    outputs beside it as for the corpus). Empty unless the dataset is synthetic: real data has none."""
    if config["dataset"] != "synthetic":
        return []
    return expand(f"{PAIRED_TREE.preprocess}/{{actor}}/expressions.parquet", actor=config["actors"])


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
    """The settings flags of one SCMC trainer: the shared `scmc` keys and its own section."""
    extra = ["image_pretrained"] if (stage, modality) == ("train", "image") else []
    return " ".join([flags("scmc", [*TRAINER_SETTINGS, "sample_rate", *extra]), flags(f"scmc.{stage}_{modality}")])


def table_flags(modality):
    """`--expressions ...` / `--shards ...` from the rule's own inputs (audio has none)."""
    return lambda wildcards, input: " ".join(f"--{key} {' '.join(input[key])}" for key in MODALITY_INPUTS[modality])


# Expression manipulator (rules/manipulator.smk): variants, their inputs and the edits.
MANIPULATOR = config["manipulator"]
VARIANTS = ["ned", "scmcl"]
RELEASED_VARIANTS = [v for v in VARIANTS if MANIPULATOR["weights"][v]]
TRAINED_VARIANTS = [v for v in VARIANTS if v not in RELEASED_VARIANTS]
NETWORK_FLAGS = " ".join([flags("", ["emotions"]), flags("manipulator.networks")])


def actor_expressions(actors):
    return expand("work/preprocess/{actor}/expressions.parquet", actor=actors)


def manipulator_inputs(wildcards):
    """ned trains on the actors' expression tables; scmcl also on the ned networks, the
    fine-tuned 3DMM metric and each actor's audio distances."""
    inputs = {"expressions": actor_expressions(config["actors"])}
    if wildcards.variant == "ned" and MANIPULATOR["pretrained"]:
        inputs["pretrained"] = MANIPULATOR["pretrained"]
    if wildcards.variant == "scmcl":
        inputs |= {"init": "work/manipulator/ned.pth", "metric": "work/scmc/finetune_expression.pt",
                   "windows": expand("work/scmc/dists_expression/{actor}/windows.parquet", actor=config["actors"])}
    return inputs


def manipulator_data_flags(wildcards, input):
    """The trainer's data flags from its own inputs (the distance folders hold the windows)."""
    data = f"--expressions {' '.join(input.expressions)}"
    if wildcards.variant == "scmcl":
        folders = " ".join(str(Path(path).parent) for path in input.windows)
        data += f" --init {input.init} --metric {input.metric} --distances {folders}"
    return data


def manipulator_settings(wildcards):
    return " ".join([NETWORK_FLAGS, flags("", ["test_clips"]), flags("scmc.dists", ["seq_len"]),
                     flags("manipulator.train"), flags(f"manipulator.{wildcards.variant}"),
                     flags("manipulator", ["pretrained"]) if wildcards.variant == "ned" else ""])


EDIT_SOURCE_FLAGS = f"--source-emotion {EDIT_SOURCE.emotion} --level {EDIT_SOURCE.level}"


def edit_command(reference):
    """`scmcl manipulate` of one test clip; reference-driven edits add the reference's table."""
    ref = " --reference-expressions {input.reference} --reference-actor {wildcards.ref_actor}" if reference else ""
    return ("scmcl manipulate --weights {input.weights} --expressions {input.expressions} --manifest {input.manifest}"
            f" --actor {{wildcards.actor}} {EDIT_SOURCE_FLAGS} --clip {{wildcards.clip}} --emotion {{wildcards.emotion}}{ref}"
            " {params.settings} --out {output.edit} --record {output.record} --device {resources.device} > {log} 2>&1")


EDIT_SETTINGS = " ".join([NETWORK_FLAGS, flags("", ["test_clips"]), flags("scmc.dists", ["seq_len"]), flags("manipulator.edit")])


def label_edits(variant):
    """Label-driven edits of every actor's neutral test clips into each other emotion."""
    return expand("work/manipulator/edits/{variant}/{actor}/{clip}_{emotion}.parquet", variant=variant,
                  actor=config["actors"], clip=config["test_clips"], emotion=EDIT_EMOTIONS)


def manipulator_files():
    """The manipulator stage's products: the classifier report, both variants, one
    reference-driven edit (the first actor's test clip in the first emotion, styled by the last
    actor) and, where there is a paired ground truth (the synthetic corpus), the ablation."""
    reference = (f"work/manipulator/edits/scmcl/{config['actors'][0]}/{config['test_clips'][0]}_"
                 f"{EDIT_EMOTIONS[0]}_ref_{config['actors'][-1]}.parquet")
    ablation = ["work/manipulator/ablation.tsv"] if paired_files() else []
    return ["work/manipulator/classifier.json", *expand("work/manipulator/{variant}.pth", variant=VARIANTS),
            reference, *ablation]


# Per-actor renderer (rules/renderer.smk): its actors, variants, inputs and settings.
RENDERER = config["renderer"]
RENDERER_ACTORS = RENDERER["actors"] or config["actors"]
for _actor in [a for a in RENDERER_ACTORS + [a for v in RENDERER["weights"].values() for a in v] if a not in config["actors"]]:
    raise WorkflowError(f"renderer.actors names {_actor}, which is not in actors ({', '.join(config['actors'])}): "
                        "a renderer trains on a preprocessed actor of `actors`; add it there or remove it")
RENDERER_NETWORKS = flags("renderer.networks")
RENDERER_VARIANTS = ["ned", "scmcl"]


def renderer_weights(variant, actor):
    """The generator of (variant, actor): the imported release, or the trained file."""
    if actor in RENDERER["weights"][variant]:
        return f"work/renderer/released/{variant}/{actor}.pth"
    return f"work/renderer/{actor}/{variant}.pth"


def renderer_shards(wildcards):
    """The actor's preprocessing shard tables: they list its clip folders."""
    return expand("work/preprocess/{actor}/{emotion}.parquet", actor=wildcards.actor, emotion=config["emotions"])


def renderer_inputs(wildcards):
    """ned: the actor's shards (and renderer.pretrained when set); scmcl also the actor's ned
    renderer, the scmcl manipulator, the fine-tuned image metric and its distances, the FLAME files."""
    inputs = {"shards": renderer_shards(wildcards)}
    if wildcards.variant == "ned" and RENDERER["pretrained"]:
        inputs["pretrained"] = RENDERER["pretrained"]
    if wildcards.variant == "scmcl":
        inputs |= {"init": renderer_weights("ned", wildcards.actor), "manipulator": "work/manipulator/scmcl.pth",
                   "expressions": f"work/preprocess/{wildcards.actor}/expressions.parquet",
                   "windows": f"work/scmc/dists_image/{wildcards.actor}/windows.parquet",
                   "metric": "work/scmc/finetune_image.pt", "model": config["flame"]["model"],
                   "landmarks": config["flame"]["landmark_embedding"]}
    return inputs


def renderer_data_flags(wildcards, input):
    """The trainer's data flags from its own inputs (the distance folder holds the windows)."""
    data = f"--shards {' '.join(input.shards)}"
    if wildcards.variant == "scmcl":
        data += (f" --init {input.init} --manipulator {input.manipulator} --expressions {input.expressions}"
                 f" --distances {Path(input.windows).parent} --metric {input.metric} --model {input.model}"
                 f" --landmarks {input.landmarks}")
    return data


def renderer_settings(wildcards):
    variant = wildcards.variant
    own = ["vgg_weights", "pretrained"] if variant == "ned" else ["vgg_weights", "lpips_weights", "lpips_backbone"]
    manipulator = [flags("", ["emotions"]), flags("manipulator.networks"), flags("scmc.dists", ["seq_len"])] if variant == "scmcl" else []
    return " ".join([RENDERER_NETWORKS, flags("", ["test_clips"]), flags("renderer", own), *manipulator,
                     flags("renderer.train"), flags(f"renderer.{variant}")])


def renderer_files():
    """Every renderer actor's held-out scores and sample grid, per variant."""
    return [f"work/renderer/{actor}/{variant}.eval.tsv" for actor in RENDERER_ACTORS for variant in RENDERER_VARIANTS]


# Edited videos (rules/edit.smk): each renderer actor's first test clip in every other emotion.
EDIT = config["edit"]
EDIT_CLIP = config["test_clips"][0]
for _actor in [a for a in EDIT["references"] if a not in ALL_ACTORS]:
    raise WorkflowError(f"edit.references names {_actor}, which is not a configured actor ({', '.join(ALL_ACTORS)})")
for _emotion in [e for e in EDIT["reference_emotions"] if e not in EDIT_EMOTIONS]:
    raise WorkflowError(f"edit.reference_emotions names {_emotion}, which is not a configured emotion ({', '.join(EDIT_EMOTIONS)})")
#: Reference-driven videos may be styled by any actor: edit.references and the paper protocols'.
REFERENCE_SUFFIX = "|".join(f"_ref_{actor}" for actor in ALL_ACTORS)


def result_references(emotion):
    """The reference actors of an emotion's results/ videos: edit.references where the emotion is
    one of edit.reference_emotions (empty: all)."""
    return EDIT["references"] if emotion in (EDIT["reference_emotions"] or EDIT_EMOTIONS) else []


def result_files():
    """results/<actor>/edited_<emotion>.mp4 per renderer actor and non-neutral emotion, and the
    reference-driven ones of edit.references."""
    return [f"results/{actor}/edited_{emotion}{ref}.mp4" for actor in RENDERER_ACTORS for emotion in EDIT_EMOTIONS
            for ref in [""] + [f"_ref_{actor}" for actor in result_references(emotion)]]


def result_source(wildcards):
    """The edited video behind a results/ target; an actor, emotion or reference the config does
    not have is one error at DAG time, naming what is configured."""
    problems = []
    if wildcards.actor not in RENDERER_ACTORS:
        problems.append(f"actor {wildcards.actor} has no renderer (renderer.actors: {', '.join(RENDERER_ACTORS)}; "
                        "add it there and to `actors`)")
    if wildcards.emotion not in EDIT_EMOTIONS:
        problems.append(f"emotion {wildcards.emotion} is not a configured non-neutral emotion ({', '.join(EDIT_EMOTIONS)})")
    ref = wildcards.ref.removeprefix("_ref_")
    if ref and ref not in EDIT["references"]:
        problems.append(f"reference actor {ref} is not in edit.references ({', '.join(EDIT['references']) or 'none'})")
    elif ref and wildcards.emotion in EDIT_EMOTIONS and ref not in result_references(wildcards.emotion):
        problems.append(f"{wildcards.emotion} is not in edit.reference_emotions ({', '.join(EDIT['reference_emotions'])})")
    if problems:
        raise WorkflowError(f"results/{wildcards.actor}/edited_{wildcards.emotion}{wildcards.ref}.mp4: {'; '.join(problems)}")
    stem = f"work/edit/{EDIT['variant']}/{wildcards.actor}/{EDIT_CLIP}_{wildcards.emotion}{wildcards.ref}"
    return {"video": f"{stem}.mp4", "record": f"{stem}.json"}


#: Videos of edit_video: the manipulator's variants, and the evaluation's naive baseline, which
#: the scmcl renderer renders (only the manipulator differs from the best method).
EDIT_VIDEO_VARIANTS = VARIANTS + ["naive"]


def edit_stem(variant, actor, clip, emotion, ref=""):
    """The edit table (without suffix) behind a video: the manipulator's, or the naive baseline's."""
    folder = "work/evaluate/naive" if variant == "naive" else f"work/manipulator/edits/{variant}"
    return f"{folder}/{actor}/{clip}_{emotion}{ref}"


def edit_video_inputs(wildcards):
    """The edit (label- or reference-driven), the actor's renderer, the source clip's folder
    (listed by its shard table), the manifest (which names the source video, whatever the
    dataset's layout), the FLAME files."""
    edits = edit_stem(wildcards.variant, wildcards.actor, wildcards.clip, wildcards.emotion, wildcards.ref)
    renderer = "scmcl" if wildcards.variant == "naive" else wildcards.variant
    return {"edit": f"{edits}.parquet", "edit_record": f"{edits}.json",
            "renderer": renderer_weights(renderer, wildcards.actor),
            "shard": f"work/preprocess/{wildcards.actor}/{EDIT_SOURCE.emotion}.parquet",
            "manifest": CORPUS_TREE.manifest,
            "model": config["flame"]["model"], "landmarks": config["flame"]["landmark_embedding"]}


def clip_folder(shard, level, clip=EDIT_CLIP):
    """A preprocessed clip's folder, beside its shard table."""
    return str(Path(shard).with_suffix("") / f"level_{level}" / clip)


def source_clip_dir(wildcards, input):
    """The source clip's preprocessed folder."""
    return clip_folder(input.shard, EDIT_SOURCE.level, wildcards.clip)


EDIT_VIDEO_SETTINGS = " ".join([flags("renderer.networks", ["ngf", "downsample", "blocks", "frames"]), flags("edit", ["blend"])])


# Evaluation (rules/evaluate.smk; the synthetic corpus's paired ground truth): per renderer actor,
# its edit clip in every non-neutral emotion as each row's video, against the paired truth.
EVALUATE = config["evaluate"]
EVALUATION_ROWS = ["source", "naive", "ned", "scmcl", "truth"]
SOURCE_SHARD = f"work/preprocess/{{actor}}/{EDIT_SOURCE.emotion}.parquet"


def source_video(actor):
    return str(video_path(ROOT, actor, ClipKey(EDIT_SOURCE.emotion, EDIT_SOURCE.level, EDIT_CLIP)))


def evaluation_row_inputs(wildcards):
    """A row's video and driving expression table per emotion, the paired truth's videos, shard
    tables and expressions, the source's video and shard, both classifiers."""
    actor, row, emotions = wildcards.actor, wildcards.row, EDIT_EMOTIONS
    truth_videos = [paired_clip_file("video", actor, e, EDIT_CLIP) for e in emotions]
    truth_expressions = f"{PAIRED_TREE.preprocess}/{actor}/expressions.parquet"
    if row == "source":
        videos, drivers = [source_video(actor)] * len(emotions), [f"work/preprocess/{actor}/expressions.parquet"] * len(emotions)
    elif row == "truth":
        videos, drivers = truth_videos, [truth_expressions] * len(emotions)
    else:
        videos = [f"work/edit/{row}/{actor}/{EDIT_CLIP}_{e}.mp4" for e in emotions]
        drivers = [f"{edit_stem(row, actor, EDIT_CLIP, e)}.parquet" for e in emotions]
    return {"videos": videos, "drivers": drivers, "truth_videos": truth_videos, "truth_expressions": truth_expressions,
            "truth_shards": [f"{PAIRED_TREE.preprocess}/{actor}/{e}.parquet" for e in emotions],
            "source_video": source_video(actor), "source_shard": SOURCE_SHARD.format(actor=actor),
            "face_classifier": "work/evaluate/face_classifier.pt", "expression_classifier": "work/manipulator/classifier.pt"}


def evaluation_row_flags(wildcards, input):
    """The clip folders of the row's shard tables."""
    truth = " ".join(clip_folder(shard, PAIRED_LEVEL) for shard in input.truth_shards)
    return f"--truth-clips {truth} --source-clip {clip_folder(input.source_shard, EDIT_SOURCE.level)}"


def contact_sheet_videos(wildcards):
    """Source | naive | NED | NED+SCMCL | paired truth of one actor's edit clip in one emotion."""
    edits = [f"work/edit/{row}/{wildcards.actor}/{EDIT_CLIP}_{wildcards.emotion}.mp4" for row in ["naive", "ned", "scmcl"]]
    return [source_video(wildcards.actor), *edits, paired_clip_file("video", wildcards.actor, wildcards.emotion, EDIT_CLIP)]


def trainer_metrics():
    """The metrics table of every trainer that runs (a released checkpoint has none)."""
    scmc = [f"work/scmc/{name}.metrics.tsv" for name in ["audio", "expression", "image", "finetune_expression", "finetune_image"]]
    manipulator = [f"work/manipulator/{variant}.metrics.tsv" for variant in TRAINED_VARIANTS]
    renderer = [f"work/renderer/{actor}/{variant}.metrics.tsv" for actor in RENDERER_ACTORS for variant in RENDERER_VARIANTS
                if actor not in RENDERER["weights"][variant]]
    return scmc + manipulator + renderer


def video_page_layout():
    """Per renderer actor and emotion: its title and its (label, video) pairs, side by side."""
    layout = []
    for actor in RENDERER_ACTORS:
        for emotion in EDIT_EMOTIONS:
            stem = f"work/edit/{{variant}}/{actor}/{EDIT_CLIP}_{emotion}"
            videos = [("source (neutral)", source_video(actor)), ("NED", f"{stem.format(variant='ned')}.mp4"),
                      ("NED+SCMCL", f"{stem.format(variant='scmcl')}.mp4"),
                      *[(f"NED+SCMCL, style of {ref}", f"{stem.format(variant='scmcl')}_ref_{ref}.mp4")
                        for ref in result_references(emotion)],
                      ("paired truth", paired_clip_file("video", actor, emotion, EDIT_CLIP))]
            layout.append((f"{actor} {emotion}", videos))
    return layout


def video_page_entries(wildcards):
    """`scmcl evaluate page` entries, one quoted argument per actor and emotion."""
    return " ".join("'" + "|".join([title] + [f"{label}={video}" for label, video in videos]) + "'"
                    for title, videos in video_page_layout())


def video_page_videos():
    """The page's videos (its inputs)."""
    return [video for _, videos in video_page_layout() for _, video in videos]


def evaluation_files():
    """The evaluation table and plot, the contact sheets, the training curves and the video page
    (synthetic corpus only: real data has no paired ground truth)."""
    if config["dataset"] != "synthetic":
        return []
    sheets = [f"work/evaluate/{actor}/sheet_{emotion}.png" for actor in RENDERER_ACTORS for emotion in EDIT_EMOTIONS]
    curves = [path.replace("work/", "work/report/curves/", 1).replace(".metrics.tsv", ".png") for path in trainer_metrics()]
    return ["results/evaluation.tsv", "results/evaluation.png", *sheets, *curves, "work/report/videos"]


# The SPFEM papers' metrics (rules/evaluate.smk): every test actor's edit clip styled into each
# emotion by its own clips (intra-ID) and by the previous actor's (cross-ID), both methods.
PAPER = EVALUATE["paper"]
PAPER_ACTORS = PAPER["actors"] or RENDERER_ACTORS
for _actor in [a for a in PAPER_ACTORS if a not in RENDERER_ACTORS]:
    raise WorkflowError(f"evaluate.paper.actors names {_actor}, which has no renderer (renderer.actors: "
                        f"{', '.join(RENDERER_ACTORS)}): add it there or remove it")
PAPER_PROTOCOLS = ["intra_id", "cross_id"]
PAPER_WEIGHTS = flags("evaluate.paper.weights")


def paper_weight_state(networks=("arcface", "efficientface", "syncnet")):
    """Each configured file's size and time: a param, so supplying or replacing one reruns the
    metrics it feeds (the files are no inputs: a missing one skips its metrics, not the run)."""
    state = []
    for path in (PAPER["weights"][name] for name in networks):
        stat = Path(path).stat() if path and Path(path).is_file() else None
        state.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}" if stat else f"{path}:absent")
    return state


def paper_reference(protocol, actor):
    """The reference actor: the actor itself (intra-ID), or the one before it in `actors`,
    cyclically (cross-ID, as the CDRL scripts pair RAVDESS's Actor_02 with Actor_01 and Actor_01
    with Actor_06)."""
    if protocol == "intra_id":
        return actor
    if len(config["actors"]) < 2:
        raise WorkflowError("results/paper_cross_id.tsv needs a second actor in `actors`: cross-ID styles each test actor "
                            "by another actor's clips")
    return config["actors"][config["actors"].index(actor) - 1]


def paper_entries(protocol):
    """(method, actor, emotion, feature file) of one protocol's table: the real test clips and
    both methods' edits, per test actor and emotion."""
    entries = []
    for actor in PAPER_ACTORS:
        ref = paper_reference(protocol, actor)
        for emotion in config["emotions"]:
            entries.append(("real", actor, emotion, f"work/paper/real/{actor}/{emotion}.npz"))
            entries += [(v, actor, emotion, f"work/paper/{v}/{actor}/{EDIT_CLIP}_{emotion}_ref_{ref}.npz") for v in VARIANTS]
    return entries


def paper_files():
    """Both protocols' tables (the target `paper_metrics`; `all` too when a network file is set)."""
    return expand("results/paper_{protocol}.tsv", protocol=PAPER_PROTOCOLS)
