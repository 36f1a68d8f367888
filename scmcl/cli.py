"""The ``scmcl`` console script: one sub-command per stage, so every rule's work also runs
without Snakemake (``scmcl corpus synth ...``, ``scmcl bench raster``)."""

from __future__ import annotations

import argparse
import os
import sys

from scmcl.corpus import cli as corpus_cli
from scmcl.edit import cli as edit_cli
from scmcl.evaluate import cli as evaluate_cli
from scmcl.face3d import cli as face3d_cli
from scmcl.manipulator import cli as manipulator_cli
from scmcl.preprocess import cli as preprocess_cli
from scmcl.preprocess import track_cli
from scmcl.renderer import cli as renderer_cli
from scmcl.scmc import cli as scmc_cli

STAGES = (corpus_cli, preprocess_cli, track_cli, scmc_cli, manipulator_cli, renderer_cli, edit_cli, evaluate_cli)
#: Stages that add a ``scmcl bench <verb>``.
BENCHES = (face3d_cli, scmc_cli, renderer_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scmcl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        stage.register(sub)
    bench = sub.add_parser("bench", help="benchmarks: figures printed, never asserted").add_subparsers(dest="verb", required=True)
    for stage in BENCHES:
        stage.register_bench(bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (OSError, ValueError, RuntimeError) as err:
        # Bad input is a one-line message naming the file; SCMCL_DEBUG=1 shows the traceback.
        if os.environ.get("SCMCL_DEBUG"):
            raise
        print(f"scmcl {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
