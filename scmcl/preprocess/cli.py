"""``scmcl preprocess``: shards of clips → per-clip tables and image stacks; expression tables."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from scmcl.options import add_settings


def _shard(args: argparse.Namespace) -> int:
    import torch

    from scmcl.options import settings_values
    from scmcl.preprocess.settings import PreprocessSettings
    from scmcl.preprocess.shard import ShardRunner, run_shard

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = PreprocessSettings(**settings_values(args, "preprocess"), device=args.device)
    identity = None
    if args.identity:
        from scmcl.face3d.flame_file import load_flame_model
        from scmcl.preprocess.identity import read_identity

        identity = read_identity(args.identity, args.actor, min(settings.n_shape, load_flame_model(args.model).num_shape))
    runner = ShardRunner(settings, args.model, args.landmarks, args.data_root, identity)
    table = run_shard(Path(args.manifest), args.actor, args.emotion, Path(args.clip_root), Path(args.out), runner)
    print(f"{args.actor}/{args.emotion}: {len(table)} clips, {int(table.frames.sum())} frames -> {args.out}")
    return 0


def _identity(args: argparse.Namespace) -> int:
    import torch

    from scmcl.options import settings_values
    from scmcl.preprocess.settings import PreprocessSettings
    from scmcl.preprocess.shard import ShardRunner, fit_actor_identity

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = PreprocessSettings(**settings_values(args, "preprocess"), device=args.device)
    runner = ShardRunner(settings, args.model, args.landmarks, args.data_root)
    record = fit_actor_identity(Path(args.manifest), args.actor, settings.identity_clips, Path(args.out), runner)
    print(f"{args.actor}: identity of {len(record['clips'])} neutral clips ({', '.join(record['clips'])}) -> {args.out}")
    return 0


def _expressions(args: argparse.Namespace) -> int:
    from scmcl.io.atomic import write_parquet
    from scmcl.preprocess.shard import expression_table

    table = expression_table([Path(p) for p in args.shards])
    write_parquet(table, args.out)
    print(f"{len(table)} frames of {table['clip'].nunique()} clips -> {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    pre = sub.add_parser("preprocess", help="tracking, reconstruction, alignment, conditioning images")
    verbs = pre.add_subparsers(dest="verb", required=True)

    identity = verbs.add_parser("identity", help="an actor's one identity for the fit, from its neutral clips")
    shard = verbs.add_parser("shard", help="preprocess every clip of one actor and emotion (resumable)")
    for parser in (identity, shard):
        parser.add_argument("--manifest", required=True, help="clip table from `scmcl corpus scan`")
        parser.add_argument("--actor", required=True)
        parser.add_argument("--model", required=True, help="FLAME-format generic_model.pkl")
        parser.add_argument("--landmarks", required=True, help="landmark_embedding.npy")
        add_settings(parser, "", keys=["data_root"])  # the synthetic tracker reads its ground truth there
        add_settings(parser, "preprocess")
        add_settings(parser, "", ["device", "threads"])
    identity.add_argument("--out", required=True, help="the identity (JSON)")
    identity.set_defaults(func=_identity)
    shard.add_argument("--emotion", required=True)
    shard.add_argument("--clip-root", required=True, help="folder of the per-clip outputs")
    shard.add_argument("--out", required=True, help="shard table (written last)")
    shard.add_argument("--identity", default="", help="the actor's identity from `scmcl preprocess identity`, kept by "
                                                      "every fit (empty: one identity fitted per clip)")
    shard.set_defaults(func=_shard)

    expr = verbs.add_parser("expressions", help="per-actor table of expression sequences")
    expr.add_argument("--shards", nargs="+", required=True)
    expr.add_argument("--out", required=True)
    expr.set_defaults(func=_expressions)
