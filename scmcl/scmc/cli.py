"""``scmcl scmc``: DTW alignment, encoder training, joint fine-tuning, import of SCMCL's released
weights, offline distances;
``scmcl bench dists``: throughput and peak memory of the chunked distance writer."""

from __future__ import annotations

import argparse
import logging

from scmcl.job import setup_job
from scmcl.options import add_settings, schema_node

MODALITIES = ("audio", "expression", "image")
VISUAL = ("expression", "image")
#: The ``scmc`` settings every trainer takes (``scmc.<stage>_<modality>`` adds its own).
TRAINER_SETTINGS = ("batch_size", "image_crop", "image_tau", "seed", "checkpoint_every", "eval_batches")


def _align(args: argparse.Namespace) -> int:
    from scmcl.io.atomic import write_parquet
    from scmcl.io.clip_data import read_table, rerun
    from scmcl.scmc.pairs import Pairing, align_pairs

    pairing = Pairing(count=args.pairs, offsets=tuple(args.clip_offsets.items()), test_clips=tuple(args.test_clips))
    manifest = read_table(args.manifest, ["actor", "emotion", "level", "clip", "audio", "fps", "frames"], rerun("manifest"))
    if args.actors:
        manifest = manifest[manifest.actor.isin(args.actors)]
        missing = sorted(set(args.actors) - set(manifest.actor))
        if missing:
            raise ValueError(f"{args.manifest} has no clips of actor(s) {', '.join(missing)}: check scmc.actors")
    table = align_pairs(manifest, pairing, args.sample_rate, args.threads)
    write_parquet(table, args.out)
    clips = table.groupby(["actor", "emotion", "level", "pair"]).ngroups
    print(f"{clips} clip pairs, {len(table)} aligned frame pairs -> {args.out}")
    return 0


def _data(args: argparse.Namespace):
    from scmcl.scmc.train import DataFiles

    return DataFiles(manifest=args.manifest, pairs=args.pairs, expressions=tuple(args.expressions),
                     shards=tuple(args.shards), sample_rate=args.sample_rate, image_crop=args.image_crop)


def _settings(args: argparse.Namespace):
    from scmcl.scmc.train import Settings

    # Settings a trainer does not have (an audio encoder's image size) are None.
    return Settings(steps=args.steps, lr=args.lr, batch_size=args.batch_size, tau=args.image_tau,
                    image_size=getattr(args, "image_size", None), warmup=getattr(args, "warmup", None),
                    consistency_weight=getattr(args, "consistency_weight", None),
                    pretrained=getattr(args, "image_pretrained", None), seed=args.seed, eval_batches=args.eval_batches,
                    checkpoint_every=args.checkpoint_every, device=args.device)


def _train(args: argparse.Namespace) -> int:
    from scmcl.scmc.train import train_encoder

    setup_job(args.threads)
    figures = train_encoder(args.modality, _data(args), _settings(args), args.run_dir, args.out, args.metrics, args.eval)
    print(f"{args.modality} encoder -> {args.out}; held-out top-5 retrieval {figures['top5']:.3f} (chance {figures['chance_top5']:.3f})")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from scmcl.scmc.train import finetune

    setup_job(args.threads)
    figures = finetune(args.visual, _data(args), _settings(args), args.audio_weights, args.visual_weights,
                       args.run_dir, args.out, args.metrics, args.eval)
    before, after = figures["before"], figures["after"]
    print(f"audio<->{args.visual} -> {args.out}; held-out distance agreement: L1 {before['consistency_l1']:.3f} -> "
          f"{after['consistency_l1']:.3f}, correlation {before['correlation']:.3f} -> {after['correlation']:.3f}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from scmcl.scmc.official import import_released

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    figures = import_released(args.name, args.released, args.out, args.metrics, args.eval)
    print(f"{args.name}: SCMCL's {figures['release']} ({args.released}, sha256 {figures['sha256'][:12]}) -> {args.out}")
    return 0


def _dists(args: argparse.Namespace) -> int:
    from scmcl.device import resolve_device
    from scmcl.scmc.dists import actor_clips, actor_distances
    from scmcl.scmc.train import JointModels

    setup_job(args.threads)
    device = resolve_device(args.device)
    models = JointModels.load(args.weights, device)
    clips = actor_clips(args.manifest, args.expressions, args.actor)
    windows = actor_distances(models, clips, args.out_dir, args.sample_rate, args.seq_len, args.hop, args.batch, args.chunk, device)
    counts = ", ".join(f"{e} {n}" for e, n in windows.emotion.value_counts(sort=False).items())
    print(f"{args.actor}: windows per emotion: {counts} -> {args.out_dir}")
    return 0


def _bench_dists(args: argparse.Namespace) -> int:
    from scmcl.scmc.bench import format_bench, run_dists_bench

    print(format_bench(run_dists_bench(args.rows, args.cols, args.chunk, args.device, args.dir)))
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, "", ["device", "threads"])
    add_settings(parser, "scmc", ["sample_rate"])


def _trainer(verbs: argparse._SubParsersAction, stage: str, modality: str, func) -> argparse.ArgumentParser:
    """One trainer's sub-command: the shared ``scmc`` settings plus its own ``scmc.<stage>_<modality>``."""
    parser = verbs.add_parser(modality, help=f"{stage} {modality} (resumable)")
    _common(parser)
    add_settings(parser, "scmc", TRAINER_SETTINGS)
    add_settings(parser, f"scmc.{stage}_{modality}")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--pairs", required=True, help="aligned pairs from `scmcl scmc align`")
    parser.add_argument("--expressions", nargs="*", default=[], help="per-actor expressions.parquet")
    parser.add_argument("--shards", nargs="*", default=[], help="preprocessing shard tables (image stacks)")
    parser.add_argument("--run-dir", required=True, help="checkpoint and running metrics (kept across failures)")
    parser.add_argument("--out", required=True, help="final weights, published atomically")
    parser.add_argument("--metrics", required=True, help="copy of the per-step metrics (TSV)")
    parser.add_argument("--eval", required=True, help="held-out figures (JSON)")
    parser.set_defaults(func=func, **{"modality" if stage == "train" else "visual": modality})
    return parser


def register(sub: argparse._SubParsersAction) -> None:
    scmc = sub.add_parser("scmc", help="SCMC metric: alignment, encoders, fine-tuning, distances")
    verbs = scmc.add_subparsers(dest="verb", required=True)

    align = verbs.add_parser("align", help="DTW-align same-sentence neutral/emotional clips on MFCCs")
    align.add_argument("--manifest", required=True)
    align.add_argument("--out", required=True)
    add_settings(align, "scmc", ["actors", "pairs", "clip_offsets", "sample_rate"])
    add_settings(align, "", ["test_clips", "threads"])
    align.set_defaults(func=_align)

    train = verbs.add_parser("train", help="contrastive training of one encoder (resumable)")
    modalities = train.add_subparsers(dest="modality", required=True)
    for modality in MODALITIES:
        parser = _trainer(modalities, "train", modality, _train)
        if modality == "image":
            add_settings(parser, "scmc", ["image_pretrained"])

    tune = verbs.add_parser("finetune", help="joint audio<->visual fine-tuning with the consistency loss (resumable)")
    visuals = tune.add_subparsers(dest="visual", required=True)
    for visual in VISUAL:
        parser = _trainer(visuals, "finetune", visual, _finetune)
        parser.add_argument("--audio-weights", required=True)
        parser.add_argument("--visual-weights", required=True)

    released = verbs.add_parser("import", help="SCMCL's released weights as a trainer's outputs (config scmc.weights)")
    released.add_argument("name", choices=list(schema_node("scmc.weights")["properties"]), help="the trainer it replaces")
    released.add_argument("released", help="SCMCL's scmc/<name>/last.pth")
    released.add_argument("--out", required=True, help="weights in scmcl's format, published atomically")
    released.add_argument("--metrics", required=True, help="per-step metrics (TSV; no steps, none ran)")
    released.add_argument("--eval", required=True, help="what was imported (JSON)")
    released.set_defaults(func=_import)

    dists = verbs.add_parser("dists", help="per-actor neutral x emotion audio window distances")
    _common(dists)
    dists.add_argument("--weights", required=True, help="fine-tuned metric from `scmcl scmc finetune`")
    dists.add_argument("--manifest", required=True)
    dists.add_argument("--expressions", required=True, help="the actor's expressions.parquet (clips and frame counts)")
    dists.add_argument("--actor", required=True)
    dists.add_argument("--out-dir", required=True)
    add_settings(dists, "scmc.dists")
    dists.set_defaults(func=_dists)


def register_bench(bench: argparse._SubParsersAction) -> None:
    dists = bench.add_parser("dists", help="throughput and peak memory of the chunked window distance matrix")
    dists.add_argument("--rows", type=int, default=20000)
    dists.add_argument("--cols", type=int, default=20000)
    dists.add_argument("--chunk", type=int, default=4096)
    add_settings(dists, "", keys=["device"])
    dists.add_argument("--dir", default=None, help="where the temporary matrix is written (default: system temp)")
    dists.set_defaults(func=_bench_dists)
