"""``scmcl scmc``: DTW alignment, encoder training, joint fine-tuning, offline distances;
``scmcl bench dists``: throughput and peak memory of the chunked distance writer."""

from __future__ import annotations

import argparse
import logging


def _setup(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")


def _align(args: argparse.Namespace) -> int:
    import pandas as pd

    from scmcl.io.atomic import write_parquet
    from scmcl.scmc.pairs import Pairing, align_pairs

    offsets = tuple((emotion, int(offset)) for emotion, offset in (item.split("=") for item in args.offsets))
    pairing = Pairing(count=args.pairs, offsets=offsets, validation=args.validation_pairs)
    manifest = pd.read_parquet(args.manifest)
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

    return Settings(steps=args.steps, lr=args.lr, batch_size=args.batch_size, tau=args.tau, image_size=args.image_size,
                    warmup=getattr(args, "warmup", 0), consistency_weight=getattr(args, "consistency_weight", 1.0),
                    pretrained=getattr(args, "pretrained", ""), seed=args.seed, eval_batches=args.eval_batches,
                    checkpoint_every=args.checkpoint_every, device=args.device)


def _train(args: argparse.Namespace) -> int:
    from scmcl.scmc.train import train_encoder

    _setup(args)
    figures = train_encoder(args.modality, _data(args), _settings(args), args.run_dir, args.out, args.metrics, args.eval)
    print(f"{args.modality} encoder -> {args.out}; held-out top-5 retrieval {figures['top5']:.3f} (chance {figures['chance_top5']:.3f})")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from scmcl.scmc.train import finetune

    _setup(args)
    figures = finetune(args.visual, _data(args), _settings(args), args.audio_weights, args.visual_weights,
                       args.run_dir, args.out, args.metrics, args.eval)
    before, after = figures["before"], figures["after"]
    print(f"audio<->{args.visual} -> {args.out}; held-out distance agreement: L1 {before['consistency_l1']:.3f} -> "
          f"{after['consistency_l1']:.3f}, correlation {before['correlation']:.3f} -> {after['correlation']:.3f}")
    return 0


def _dists(args: argparse.Namespace) -> int:
    import pandas as pd

    from scmcl.device import resolve_device
    from scmcl.scmc.dists import actor_clips, actor_distances
    from scmcl.scmc.train import JointModels

    _setup(args)
    device = resolve_device(args.device)
    models = JointModels.load(args.weights, device)
    clips = actor_clips(pd.read_parquet(args.manifest), pd.read_parquet(args.expressions), args.actor)
    windows = actor_distances(models, clips, args.out_dir, args.sample_rate, args.seq_len, args.hop, args.batch, args.chunk, device)
    counts = ", ".join(f"{e} {n}" for e, n in windows.emotion.value_counts(sort=False).items())
    print(f"{args.actor}: windows per emotion: {counts} -> {args.out_dir}")
    return 0


def _bench_dists(args: argparse.Namespace) -> int:
    from scmcl.scmc.bench import format_bench, run_dists_bench

    print(format_bench(run_dists_bench(args.rows, args.cols, args.chunk, args.device, args.dir)))
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sample-rate", type=int, default=16000, help="audio rate of every encoder input")


def _training(parser: argparse.ArgumentParser, steps: int, lr: float, image_size: int) -> None:
    _common(parser)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--pairs", required=True, help="aligned pairs from `scmcl scmc align`")
    parser.add_argument("--expressions", nargs="*", default=[], help="per-actor expressions.parquet")
    parser.add_argument("--shards", nargs="*", default=[], help="preprocessing shard tables (image stacks)")
    parser.add_argument("--image-crop", type=float, default=35 / 256, help="fraction cut from each side of the aligned face")
    parser.add_argument("--image-size", type=int, default=image_size)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tau", type=int, default=3, help="image negatives within tau path steps of the anchor are rejected")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--eval-batches", type=int, default=20)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--run-dir", required=True, help="checkpoint and running metrics (kept across failures)")
    parser.add_argument("--out", required=True, help="final weights, published atomically")
    parser.add_argument("--metrics", required=True, help="copy of the per-step metrics (TSV)")
    parser.add_argument("--eval", required=True, help="held-out figures (JSON)")


def register(sub: argparse._SubParsersAction) -> None:
    scmc = sub.add_parser("scmc", help="SCMC metric: alignment, encoders, fine-tuning, distances")
    verbs = scmc.add_subparsers(dest="verb", required=True)

    align = verbs.add_parser("align", help="DTW-align same-sentence neutral/emotional clips on MFCCs")
    align.add_argument("--manifest", required=True)
    align.add_argument("--out", required=True)
    align.add_argument("--actors", nargs="*", default=[], help="actors to align (default: every actor of the manifest)")
    align.add_argument("--pairs", type=int, default=3, help="neutral clips 001..N are paired")
    align.add_argument("--offsets", nargs="*", default=[], help="EMOTION=OFFSET clip-id offsets, e.g. disgusted=27")
    align.add_argument("--validation-pairs", type=int, default=1)
    align.add_argument("--sample-rate", type=int, default=16000)
    align.add_argument("--threads", type=int, default=2)
    align.set_defaults(func=_align)

    train = verbs.add_parser("train", help="contrastive training of one encoder (resumable)")
    train.add_argument("modality", choices=["audio", "expression", "image"])
    _training(train, steps=2000, lr=1e-4, image_size=128)
    train.add_argument("--pretrained", default="", help="torchvision ResNet-18 ImageNet weights (image only)")
    train.set_defaults(func=_train)

    tune = verbs.add_parser("finetune", help="joint audio<->visual fine-tuning with the consistency loss (resumable)")
    tune.add_argument("visual", choices=["expression", "image"])
    _training(tune, steps=10000, lr=1e-5, image_size=64)
    tune.add_argument("--audio-weights", required=True)
    tune.add_argument("--visual-weights", required=True)
    tune.add_argument("--warmup", type=int, default=5000, help="steps before the consistency loss starts")
    tune.add_argument("--consistency-weight", type=float, default=1.0)
    tune.set_defaults(func=_finetune)

    dists = verbs.add_parser("dists", help="per-actor neutral x emotion audio window distances")
    _common(dists)
    dists.add_argument("--weights", required=True, help="fine-tuned metric from `scmcl scmc finetune`")
    dists.add_argument("--manifest", required=True)
    dists.add_argument("--expressions", required=True, help="the actor's expressions.parquet (clips and frame counts)")
    dists.add_argument("--actor", required=True)
    dists.add_argument("--out-dir", required=True)
    dists.add_argument("--seq-len", type=int, default=10)
    dists.add_argument("--hop", type=int, default=1)
    dists.add_argument("--batch", type=int, default=256)
    dists.add_argument("--chunk", type=int, default=4096, help="matrix rows computed at a time (bounds peak memory)")
    dists.set_defaults(func=_dists)


def register_bench(bench: argparse._SubParsersAction) -> None:
    dists = bench.add_parser("dists", help="throughput and peak memory of the chunked window distance matrix")
    dists.add_argument("--rows", type=int, default=20000)
    dists.add_argument("--cols", type=int, default=20000)
    dists.add_argument("--chunk", type=int, default=4096)
    dists.add_argument("--device", default="cpu")
    dists.add_argument("--dir", default=None, help="where the temporary matrix is written (default: system temp)")
    dists.set_defaults(func=_bench_dists)
