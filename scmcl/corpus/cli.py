"""``scmcl corpus``: the built-in synthetic corpus (head model, clips, paired ground truth)."""

from __future__ import annotations

import argparse

from scmcl.config import MEAD_EMOTIONS
from scmcl.options import add_settings, settings_values

#: The ``synthetic`` settings of one clip's generator (``sentences`` only sizes the corpus).
CLIP_SETTINGS = ("fps", "resolution", "sample_rate", "seed", "head_motion")


def _settings(args: argparse.Namespace):
    import torch

    from scmcl.corpus.synth import SynthSettings

    torch.set_num_threads(args.threads)
    return SynthSettings(**settings_values(args, "synthetic", CLIP_SETTINGS), device=args.device)


def _head(args: argparse.Namespace) -> int:
    from scmcl.corpus.head import build_head
    from scmcl.face3d.flame_file import save_flame_model, save_landmark_embedding

    model, landmarks = build_head(seed=args.seed)
    save_flame_model(args.model, model)
    save_landmark_embedding(args.landmarks, landmarks)
    print(f"head: {model.num_vertices} vertices, {len(model.faces)} faces, {model.num_shape} identity and "
          f"{model.num_expression} expression components -> {args.model}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from scmcl.corpus.synth import synth_actor

    n = synth_actor(args.model, args.landmarks, args.root, args.actor, args.emotions, args.levels, args.sentences,
                    _settings(args))
    print(f"{args.actor}: wrote {n} clips under {args.root}/{args.actor}")
    return 0


def _paired(args: argparse.Namespace) -> int:
    from scmcl.corpus.layout import ClipKey, audio_path, groundtruth_path, video_path
    from scmcl.corpus.synth import Generator

    generator = Generator(args.model, args.landmarks, args.actor, _settings(args))
    target = generator.write_paired(args.root, ClipKey(args.emotion, args.level, args.clip), args.target_emotion,
                                    args.target_level)
    print(f"{args.actor}: {args.emotion} level_{args.level} clip {args.clip} shown {target.emotion} "
          f"level_{target.level} -> {video_path(args.root, args.actor, target)} (audio "
          f"{audio_path(args.root, args.actor, target)}, ground truth {groundtruth_path(args.root, args.actor, target)})")
    return 0


def _scan(args: argparse.Namespace) -> int:
    from scmcl.corpus.manifest import check_manifest_output, scan_mead
    from scmcl.io.atomic import write_parquet

    check_manifest_output(args.root, args.out)
    table = scan_mead(args.root, args.actors, args.emotions, args.levels, workers=args.workers)
    write_parquet(table, args.out)
    print(f"{len(table)} clips of {table['actor'].nunique()} actors under {args.root} -> {args.out}")
    return 0


def _ravdess(args: argparse.Namespace) -> int:
    from scmcl.corpus.manifest import check_manifest_output, check_outside
    from scmcl.corpus.ravdess import link_ravdess, ravdess_manifest
    from scmcl.io.atomic import write_parquet

    check_manifest_output(args.root, args.out)
    if args.links:
        check_outside(args.root, args.links)
    table = ravdess_manifest(args.root, args.actors, args.emotions, args.levels, workers=args.workers)
    if args.links:
        link_ravdess(table, args.links)
    write_parquet(table, args.out)
    print(f"{len(table)} RAVDESS clips of {table['actor'].nunique()} actors under {args.root} -> {args.out}"
          + (f" (symlinks under {args.links})" if args.links else ""))
    return 0


def _manifest_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="dataset root (read only; nothing is written into it)")
    p.add_argument("--out", required=True, help="output manifest (.parquet)")
    p.add_argument("--actors", nargs="+", help="actor folders to use (default: all)")
    p.add_argument("--emotions", nargs="+", choices=MEAD_EMOTIONS, help="default: all of MEAD's")
    p.add_argument("--levels", nargs="+", type=int, help="levels of the non-neutral emotions (default: all found)")
    p.add_argument("--workers", type=int, help="parallel ffprobe processes (default: CPU count)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="FLAME-format head model (generic_model.pkl)")
    p.add_argument("--landmarks", required=True, help="landmark_embedding.npy of the head")
    p.add_argument("--actor", required=True)
    add_settings(p, "synthetic", CLIP_SETTINGS)
    add_settings(p, "", ["device", "threads"])


def register(sub: argparse._SubParsersAction) -> None:
    corpus = sub.add_parser("corpus", help="built-in synthetic corpus").add_subparsers(dest="verb", required=True)

    head = corpus.add_parser("head", help="build the procedural head in FLAME's file format")
    add_settings(head, "synthetic", ["seed"])
    head.add_argument("--model", required=True, help="output generic_model.pkl")
    head.add_argument("--landmarks", required=True, help="output landmark_embedding.npy")
    head.set_defaults(func=_head)

    synth = corpus.add_parser("synth", help="write every clip of one actor in MEAD's layout")
    _common(synth)
    synth.add_argument("--root", required=True, help="corpus root (MEAD layout)")
    add_settings(synth, "", keys=["emotions", "levels"])
    add_settings(synth, "synthetic", ["sentences"])
    synth.set_defaults(func=_synth)

    paired = corpus.add_parser(
        "paired", help="render a clip's sentence, timing and head motion in another emotion (paired ground truth)",
        description="Writes the paired ground truth under --root in MEAD's layout, as the clip (target emotion, "
                    "target level, clip id): <root>/<actor>/video/front/<target-emotion>/level_<n>/<clip>.mp4 "
                    "(with its audio), <root>/<actor>/audio/.../<clip>.m4a and the per-frame ground truth "
                    "<root>/<actor>/groundtruth/.../<clip>.parquet, so it is scanned (`scmcl corpus scan`) and "
                    "preprocessed like any clip. --root is a tree of its own, not the corpus's root (the paired "
                    "clip has the name of the corpus's own clip of that emotion, level and id).")
    _common(paired)
    paired.add_argument("--root", required=True, help="root of the paired tree (MEAD layout; not the corpus's root)")
    paired.add_argument("--emotion", required=True, choices=MEAD_EMOTIONS, help="source clip's emotion")
    paired.add_argument("--level", type=int, required=True)
    paired.add_argument("--clip", required=True, help="source clip id, e.g. 001")
    paired.add_argument("--target-emotion", required=True, choices=MEAD_EMOTIONS)
    paired.add_argument("--target-level", type=int, required=True)
    paired.set_defaults(func=_paired)

    scan = corpus.add_parser("scan", help="clip manifest of a MEAD-layout dataset root")
    _manifest_options(scan)
    scan.set_defaults(func=_scan)

    ravdess = corpus.add_parser("ravdess", help="clip manifest of a RAVDESS root, mapped onto MEAD's layout")
    _manifest_options(ravdess)
    ravdess.add_argument("--links", help="also build a MEAD-layout tree of symlinks to the originals here")
    ravdess.set_defaults(func=_ravdess)
