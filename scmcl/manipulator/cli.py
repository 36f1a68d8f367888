"""``scmcl manipulator``: train a variant, import a released checkpoint, train the emotion
classifier, score the edits (the ablation table); ``scmcl manipulate``: edit one clip."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scmcl.job import setup_job
from scmcl.options import add_settings
from scmcl.released import register_import

VARIANTS = ("ned", "scmcl")


def _sizes(args: argparse.Namespace):
    from scmcl.manipulator.networks import NetworkSizes

    return NetworkSizes.from_values(vars(args))


def _nets(args: argparse.Namespace):
    from scmcl.manipulator.networks import ManipulatorNets

    return ManipulatorNets(_sizes(args), len(args.emotions))


def _train(args: argparse.Namespace) -> int:
    from scmcl.manipulator.train import (
        Inputs,
        TrainerSettings,
        VariantSettings,
        train_manipulator,
    )

    setup_job(args.threads)
    common = TrainerSettings(**{key: getattr(args, key) for key in TrainerSettings.__dataclass_fields__})
    settings = VariantSettings(**{key: getattr(args, key, None) for key in VariantSettings.__dataclass_fields__})
    inputs = Inputs(expressions=tuple(args.expressions), emotions=tuple(args.emotions), test_clips=tuple(args.test_clips),
                    seq_len=args.seq_len, init=getattr(args, "init", None), metric=getattr(args, "metric", None),
                    distances={Path(folder).name: folder for folder in getattr(args, "distances", [])})
    figures = train_manipulator(args.variant, _sizes(args), common, settings, inputs, args.device, args.run_dir,
                                args.out, args.metrics)
    print(f"manipulator {args.variant}: {figures['windows']} training windows of {figures['clips']} clips, "
          f"{figures['padded_columns']} zero-padded columns passed through -> {args.out}"
          + (f"; pseudo-target coverage {figures['pseudo_coverage']:.3f}" if "pseudo_coverage" in figures else ""))
    return 0


def _check_released(args: argparse.Namespace):
    from scmcl.manipulator.checkpoint import load_networks

    return load_networks(args.released, _nets(args))


def _classifier(args: argparse.Namespace) -> int:
    from scmcl.io.atomic import atomic_path
    from scmcl.manipulator.classifier import (
        ClassifierSettings,
        save_classifier,
        train_classifier,
    )

    setup_job(args.threads)
    settings = ClassifierSettings(**{key: getattr(args, key) for key in ClassifierSettings.__dataclass_fields__})
    model, report = train_classifier(args.expressions, args.emotions, args.test_clips, settings, args.device)
    save_classifier(args.out, model, report)
    with atomic_path(args.report) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    print(f"emotion classifier -> {args.out}: held-out frame accuracy {report['accuracy']:.3f} "
          f"(chance {report['chance']:.3f}), clip accuracy {report['clip_accuracy']:.3f}")
    return 0


def _manipulate(args: argparse.Namespace) -> int:
    from scmcl.manipulator.run_edit import EditRequest, run_edit

    setup_job(args.threads)
    request = EditRequest(expressions=args.expressions, manifest=args.manifest, actor=args.actor,
                          source=(args.source_emotion, args.level, args.clip), emotion=args.emotion,
                          reference=args.reference_expressions, reference_actor=args.reference_actor,
                          test_clips=tuple(args.test_clips),
                          intensity=args.keyframes if args.keyframes is not None else args.intensity,
                          seed=args.seed, seq_len=args.seq_len, batch=args.batch)
    figures = run_edit(request, _nets(args), args.emotions, args.weights, args.device, args.out, args.record)
    print(f"{args.actor} {args.source_emotion} {args.clip} -> {args.emotion} ({figures['style']}): "
          f"{figures['frames']} frames -> {args.out}")
    return 0


def _keyframes(text: str) -> list:
    """``--keyframes`` as a JSON list (``intensity_curve`` checks its pairs); argparse names the option."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON list: expected [[t_seconds, value], ...], "
                                         "e.g. '[[0, 0], [1.5, 1]]'")
    return value


def _ablation(args: argparse.Namespace) -> int:
    from scmcl.manipulator.ablation import ablation_table

    setup_job(args.threads)
    edits = {}
    for item in args.edits:
        variant, _, path = item.partition("=")
        edits.setdefault(variant, []).append(path)
    table = ablation_table(edits, args.expressions, args.paired, args.classifier, args.device, args.out, args.per_edit)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def _common(parser: argparse.ArgumentParser, networks: bool = True) -> None:
    add_settings(parser, "", ["device", "emotions", "threads"])
    if networks:
        add_settings(parser, "manipulator.networks")


def register(sub: argparse._SubParsersAction) -> None:
    manipulator = sub.add_parser("manipulator", help="expression manipulator: training, released weights, classifier, ablation")
    verbs = manipulator.add_subparsers(dest="verb", required=True)
    train = verbs.add_parser("train", help="train a variant (resumable)").add_subparsers(dest="variant", required=True)
    for variant in VARIANTS:
        parser = train.add_parser(variant, help=f"the {variant} variant")
        _common(parser)
        add_settings(parser, "", ["test_clips"])
        add_settings(parser, "scmc.dists", ["seq_len"])
        add_settings(parser, "manipulator.train")
        add_settings(parser, f"manipulator.{variant}")
        if variant == "ned":
            add_settings(parser, "manipulator", ["pretrained"])
        parser.add_argument("--expressions", nargs="+", required=True, help="per-actor expressions.parquet")
        if variant == "scmcl":
            parser.add_argument("--init", required=True, help="the trained ned networks (XX_nets.pth layout)")
            parser.add_argument("--metric", required=True, help="the fine-tuned SCMC 3DMM metric (finetune_expression.pt)")
            parser.add_argument("--distances", nargs="+", required=True,
                                help="per-actor folders of the audio distances (scmc dists_expression/<actor>)")
        parser.add_argument("--run-dir", required=True, help="checkpoint and running metrics (kept across failures)")
        parser.add_argument("--out", required=True, help="the networks in NED's XX_nets.pth container")
        parser.add_argument("--metrics", required=True, help="copy of the per-step metrics (TSV)")
        parser.set_defaults(func=_train, variant=variant)

    register_import(verbs, _common, VARIANTS, "XX_nets.pth", _check_released)

    classifier = verbs.add_parser("classifier", help="train the 51-d expression emotion classifier")
    _common(classifier, networks=False)
    add_settings(classifier, "", ["test_clips"])
    add_settings(classifier, "manipulator.classifier")
    classifier.add_argument("--expressions", nargs="+", required=True, help="per-actor expressions.parquet")
    classifier.add_argument("--out", required=True, help="the classifier's weight file")
    classifier.add_argument("--report", required=True, help="held-out report (JSON)")
    classifier.set_defaults(func=_classifier)

    ablation = verbs.add_parser("ablation", help="score edits against the paired ground truth, per variant and emotion")
    _common(ablation, networks=False)
    ablation.add_argument("--edits", nargs="+", required=True, metavar="VARIANT=PATH", help="edit tables of `scmcl manipulate`")
    ablation.add_argument("--expressions", nargs="+", required=True, help="the source actors' expressions.parquet")
    ablation.add_argument("--paired", nargs="+", required=True, help="the paired ground truth's expressions.parquet")
    ablation.add_argument("--classifier", required=True, help="the emotion classifier's weight file")
    ablation.add_argument("--out", required=True, help="ablation table (TSV)")
    ablation.add_argument("--per-edit", required=True, help="each edit's figures (TSV)")
    ablation.set_defaults(func=_ablation)

    edit = sub.add_parser("manipulate", help="edit one clip's expressions to another emotion (label- or reference-driven)")
    _common(edit)
    add_settings(edit, "", ["test_clips"])
    add_settings(edit, "scmc.dists", ["seq_len"])
    add_settings(edit, "manipulator.edit", exclude=["intensity"])
    strength = edit.add_mutually_exclusive_group()  # one of them would be dropped without a word
    add_settings(strength, "manipulator.edit", ["intensity"])
    strength.add_argument("--keyframes", type=_keyframes,
                          help="intensity over time instead of --intensity: JSON [[t_seconds, value], ...]")
    edit.add_argument("--weights", required=True, help="manipulator networks (XX_nets.pth layout)")
    edit.add_argument("--expressions", required=True, help="the source actor's expressions.parquet")
    edit.add_argument("--manifest", required=True, help="the corpus manifest (the clip's fps, for keyframes)")
    edit.add_argument("--actor", required=True)
    edit.add_argument("--source-emotion", required=True, help="the source clip's emotion (edit.source.emotion)")
    edit.add_argument("--level", type=int, required=True, help="the source clip's level (edit.source.level)")
    edit.add_argument("--clip", required=True, help="source clip id, e.g. 003")
    edit.add_argument("--emotion", required=True, help="target emotion")
    edit.add_argument("--reference-expressions", help="reference-driven: the reference actor's expressions.parquet")
    edit.add_argument("--reference-actor", help="reference-driven: whose clips of the target emotion give the style")
    edit.add_argument("--out", required=True, help="edited expressions (Parquet)")
    edit.add_argument("--record", required=True, help="what made the edit (JSON)")
    edit.set_defaults(func=_manipulate)
