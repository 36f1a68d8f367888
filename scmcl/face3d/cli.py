"""``scmcl bench raster``: rasterizer throughput, printed as figures (never asserted)."""

from __future__ import annotations

import argparse

from scmcl.options import add_settings


def _bench_raster(args: argparse.Namespace) -> int:
    from scmcl.device import resolve_device
    from scmcl.face3d.bench import format_bench, run_raster_bench

    result = run_raster_bench(size=args.size, batch=args.batch, iters=args.iters, device=str(resolve_device(args.device)))
    print(format_bench(result))
    return 0


def register_bench(bench: argparse._SubParsersAction) -> None:
    raster = bench.add_parser("raster", help="frames/s of the rasterizer on a FLAME-sized mesh")
    raster.add_argument("--size", type=int, default=256)
    raster.add_argument("--batch", type=int, default=8)
    raster.add_argument("--iters", type=int, default=10)
    add_settings(raster, "", keys=["device"])
    raster.set_defaults(func=_bench_raster)
