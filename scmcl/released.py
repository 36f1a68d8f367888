"""``scmcl <stage> import``: a released checkpoint is loaded strictly by the stage's own loader,
then copied atomically, so the rule's output is a file the stage is known to read."""

from __future__ import annotations

import argparse
import shutil
from typing import Callable, Sequence

from scmcl.io.atomic import atomic_path


def register_import(verbs: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None],
                    variants: Sequence[str], what: str, check: Callable[[argparse.Namespace], object]) -> None:
    """Add the ``import`` verb; ``check(args)`` loads ``args.released`` strictly or raises."""
    parser = verbs.add_parser("import", help=f"validate a released {what} strictly and copy it")
    common(parser)
    parser.add_argument("variant", choices=variants)
    parser.add_argument("released", help=f"the released {what} (NED's or SCMCL's)")
    parser.add_argument("--out", required=True)
    parser.set_defaults(func=lambda args: _import(args, check))


def _import(args: argparse.Namespace, check: Callable[[argparse.Namespace], object]) -> int:
    check(args)  # a file that does not fit stops here, before anything is written
    with atomic_path(args.out) as tmp:
        shutil.copyfile(args.released, tmp)
    print(f"{args.command} {args.variant}: released {args.released} loads strictly -> {args.out}")
    return 0
