"""What a torch stage job sets up before its work: the thread budget its rule declares and an
INFO log with timestamps (the rule's log file)."""

from __future__ import annotations

import logging


def setup_job(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
