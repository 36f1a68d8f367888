"""torchvision's model zoo, imported on first use: importing torchvision takes about a second
(torchvision.ops brings in torch._dynamo), which every job that never builds one of its networks
(most of the workflow's) would otherwise pay at start."""

from __future__ import annotations

from types import ModuleType


def models() -> ModuleType:
    """``torchvision.models``; our networks build theirs with ``weights=None`` (the user's files)."""
    import torchvision

    return torchvision.models
