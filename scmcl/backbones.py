"""torchvision's networks that our models are built on, randomly initialised, imported on first
use: importing torchvision takes about a second (torchvision.ops brings in torch._dynamo), which
every job that never builds one of them (most of the workflow's) would otherwise pay at start."""

from __future__ import annotations

from torch import nn


def resnet18() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(weights=None)


def resnet50() -> nn.Module:
    import torchvision

    return torchvision.models.resnet50(weights=None)


def vgg16_features() -> nn.Sequential:
    import torchvision

    return torchvision.models.vgg16(weights=None).features


def vgg19_features() -> nn.Sequential:
    import torchvision

    return torchvision.models.vgg19(weights=None).features
