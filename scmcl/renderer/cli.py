"""``scmcl renderer``: train a variant for one actor (resumable), import a released generator,
score a generator on held-out clips; ``scmcl bench renderer``: training and inference speed."""

from __future__ import annotations

import argparse
from pathlib import Path

from scmcl.job import setup_job
from scmcl.options import add_settings
from scmcl.released import register_import

VARIANTS = ("ned", "scmcl")


def _sizes(args: argparse.Namespace):
    from scmcl.renderer.networks import DiscriminatorSizes, RendererSizes

    return (RendererSizes(args.ngf, args.downsample, args.blocks, args.frames),
            DiscriminatorSizes(args.ndf, args.d_layers, args.d_scales))


def _train(args: argparse.Namespace) -> int:
    from scmcl.renderer.train import RendererRun, RendererTrainSettings, train_renderer
    from scmcl.renderer.windows import actor_clips

    setup_job(args.threads)
    train, _ = actor_clips(args.shards, args.test_clips)
    settings = RendererTrainSettings(**{key: getattr(args, key) for key in RendererTrainSettings.__dataclass_fields__})
    init = args.pretrained if args.variant == "ned" else args.init
    run = RendererRun(tuple(train["directory"]), init or None, args.run_dir, args.out, args.metrics, args.samples)
    if args.variant == "ned":
        train_renderer(*_sizes(args), settings, args.vgg_weights or None, args.device, run)
    else:
        from scmcl.manipulator.networks import NetworkSizes
        from scmcl.renderer.finetune import FinetuneInputs, finetune_renderer

        inputs = FinetuneInputs(expressions=args.expressions, distances=args.distances, manipulator=args.manipulator,
                                manipulator_sizes=NetworkSizes.from_values(vars(args)), emotions=tuple(args.emotions),
                                metric=args.metric, flame_model=args.model, flame_landmarks=args.landmarks,
                                seq_len=args.seq_len, test_clips=tuple(args.test_clips), dist_thresh=args.dist_thresh,
                                topk=args.topk, sim_weight=args.sim_weight, paired_weight=args.paired_weight,
                                lpips_weights=args.lpips_weights or None, lpips_backbone=args.lpips_backbone or None)
        finetune_renderer(*_sizes(args), settings, args.vgg_weights or None, args.device, run, train, inputs)
    print(f"renderer {args.variant}: {len(train)} training clips -> {args.out}")
    return 0


def _check_released(args: argparse.Namespace):
    from scmcl.renderer.checkpoint import load_network
    from scmcl.renderer.networks import Generator

    return load_network(args.released, Generator(_sizes(args)[0]))


def _evaluate(args: argparse.Namespace) -> int:
    from scmcl.device import resolve_device
    from scmcl.io.atomic import atomic_path
    from scmcl.renderer.checkpoint import load_network
    from scmcl.renderer.evaluate import evaluate_renderer, summary
    from scmcl.renderer.networks import Generator
    from scmcl.renderer.train import write_png
    from scmcl.renderer.windows import actor_clip_dirs

    setup_job(args.threads)
    train, test = actor_clip_dirs(args.shards, args.test_clips)
    if not test:
        raise ValueError(f"{args.shards[0]}: no clip of test_clips {' '.join(args.test_clips)} to evaluate the renderer on")
    generator = load_network(args.weights, Generator(_sizes(args)[0]))
    table, grid = evaluate_renderer(generator, train, test, resolve_device(args.device))
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    write_png(Path(args.grid), grid)
    print(summary(table).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, "", ["device", "threads"])
    add_settings(parser, "renderer.networks")


def register(sub: argparse._SubParsersAction) -> None:
    renderer = sub.add_parser("renderer", help="per-actor neural face renderer: training, released weights, evaluation")
    verbs = renderer.add_subparsers(dest="verb", required=True)
    train = verbs.add_parser("train", help="train a variant for one actor (resumable)").add_subparsers(dest="variant", required=True)
    for variant in VARIANTS:
        parser = train.add_parser(variant, help=f"the {variant} variant")
        _common(parser)
        add_settings(parser, "", ["test_clips"])
        add_settings(parser, "renderer", ["vgg_weights", "pretrained"] if variant == "ned" else
                     ["vgg_weights", "lpips_weights", "lpips_backbone"])
        add_settings(parser, "renderer.train")
        add_settings(parser, f"renderer.{variant}")
        parser.add_argument("--shards", nargs="+", required=True, help="the actor's preprocessing shard tables (its clip folders)")
        if variant == "scmcl":
            add_settings(parser, "", ["emotions"])
            add_settings(parser, "manipulator.networks")
            add_settings(parser, "scmc.dists", ["seq_len"])
            parser.add_argument("--init", required=True, help="the actor's trained ned generator")
            parser.add_argument("--manipulator", required=True, help="the frozen scmcl manipulator (XX_nets.pth layout)")
            parser.add_argument("--expressions", required=True, help="the actor's expressions.parquet")
            parser.add_argument("--distances", required=True, help="the actor's image-metric distances (scmc dists_image/<actor>)")
            parser.add_argument("--metric", required=True, help="the fine-tuned SCMC image metric (finetune_image.pt)")
            parser.add_argument("--model", required=True, help="FLAME model (flame.model), to re-render edited frames")
            parser.add_argument("--landmarks", required=True, help="FLAME landmark embedding (flame.landmark_embedding)")
        parser.add_argument("--run-dir", required=True, help="checkpoint, running metrics and sample grids (kept across failures)")
        parser.add_argument("--out", required=True, help="the generator in NED's XX_net_G.pth layout")
        parser.add_argument("--metrics", required=True, help="copy of the per-step metrics (TSV)")
        parser.add_argument("--samples", required=True, help="the last sample grid (PNG: NMFC | real | generated)")
        parser.set_defaults(func=_train, variant=variant)

    register_import(verbs, _common, VARIANTS, "XX_net_G.pth generator", _check_released)

    evaluate = verbs.add_parser("evaluate", help="face-region PSNR/SSIM on held-out clips beside the mean face and NMFC retrieval")
    _common(evaluate)
    evaluate.add_argument("--weights", required=True, help="the generator (XX_net_G.pth layout)")
    add_settings(evaluate, "", ["test_clips"])
    evaluate.add_argument("--shards", nargs="+", required=True, help="the actor's preprocessing shard tables: the baselines "
                          "draw from its training clips, the scores are on its test clips")
    evaluate.add_argument("--out", required=True, help="per clip and method (TSV)")
    evaluate.add_argument("--grid", required=True, help="NMFC | real | generated of held-out frames (PNG)")
    evaluate.set_defaults(func=_evaluate)


def _bench(args: argparse.Namespace) -> int:
    from scmcl.renderer.bench import run_renderer_bench

    setup_job(args.threads)
    print(run_renderer_bench(args.device, args.iterations, args.windows, args.mixed_precision))
    return 0


def register_bench(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser("renderer", help="renderer training it/s and inference frames/s at the demo and paper "
                                               "sizes, and the loading rate of training windows against NED's PNGs")
    add_settings(parser, "", ["device"])
    parser.add_argument("--iterations", type=int, default=3, help="timed training iterations per size")
    parser.add_argument("--windows", type=int, default=200, help="training windows read per layout")
    parser.add_argument("--mixed-precision", action="store_true", help="bfloat16 autocast (CUDA only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.set_defaults(func=_bench)
