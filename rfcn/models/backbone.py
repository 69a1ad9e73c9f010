"""Dilated ResNet trunk for R-FCN: conv4 features (stride 16) for the RPN, conv5 dilated.

Shape shorthand in this module:
    N: images in the batch, H, W: padded image height and width,
    C4, C5: channels of conv4 / conv5 (ResNet-18: 256 / 512, ResNet-50/101: 1024 / 2048).

conv5 keeps stride 16 (stride 1, dilation 2) as in the paper, so both outputs are H/16 × W/16.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.ops import deform_conv2d
from torchvision.ops.misc import FrozenBatchNorm2d

from rfcn.models.spec import NORMS

logger = logging.getLogger(__name__)

_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_DEPTHS = {"resnet18": 18, "resnet50": 50, "resnet101": 101}


def norm_layer_factory(norm: str) -> Callable[[int], nn.Module]:
    """Normalisation layer constructor for `norm` in NORMS.

    "frozen_bn": BatchNorm with fixed statistics and affine (fine-tuning from ImageNet);
    "bn": ordinary trainable BatchNorm; "gn": GroupNorm with 32 groups (or fewer for narrow
    layers), independent of the batch size.
    """
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "gn":
        return lambda c: nn.GroupNorm(min(32, c // 4), c)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _dilate_basic_layer4(resnet: ResNet) -> None:
    """Turn layer4 of a BasicBlock ResNet into stride 1 / dilation 2.

    torchvision refuses `replace_stride_with_dilation` for BasicBlock; mirror what it does for
    Bottleneck: the first block loses its stride (dilation 1), later blocks use dilation 2.
    """
    for idx, block in enumerate(resnet.layer4):
        assert isinstance(block, BasicBlock)
        if idx == 0:
            block.conv1.stride = (1, 1)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
            block.stride = 1
        else:
            for conv in (block.conv1, block.conv2):
                conv.dilation = (2, 2)
                conv.padding = (2, 2)


def load_backbone_state_dict(weights_backbone: str) -> dict[str, Tensor]:
    """State dict of a torchvision ResNet from an enum name or a local .pth path.

    Args:
        weights_backbone: e.g. "ResNet50_Weights.IMAGENET1K_V1" (downloads through torchvision's
            cache) or a path to a file holding a ResNet state dict (or {"state_dict": ...} /
            {"model": ...}).
    """
    path = Path(weights_backbone).expanduser()
    if path.suffix in (".pth", ".pt") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"weights_backbone file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        return state
    try:
        weights = torchvision.models.get_weight(weights_backbone)
    except (ValueError, KeyError, AttributeError) as exc:
        raise ValueError(
            f"weights_backbone {weights_backbone!r} is neither a file nor a torchvision weights "
            "enum name such as 'ResNet50_Weights.IMAGENET1K_V1'"
        ) from exc
    return weights.get_state_dict(progress=True)


class ResNetTrunk(nn.Module):
    """ResNet stem..conv5 with conv5 dilated; returns (conv4, conv5) features.

    Args:
        resnet: a torchvision ResNet whose layer4 already has stride 1 / dilation 2.
        trainable_layers: how many of (layer4, layer3, layer2, layer1, stem) train, counted from
            the top: 5 trains everything, 3 freezes stem + res2 (the paper's fine-tuning).
    """

    def __init__(self, resnet: ResNet, trainable_layers: int = 5) -> None:
        super().__init__()
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in [0, 5], got {trainable_layers}")
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        self.out_channels_c4 = _out_channels(resnet.layer3)
        self.out_channels_c5 = _out_channels(resnet.layer4)
        stages = [self.layer4, self.layer3, self.layer2, self.layer1, self.stem]
        for stage in stages[trainable_layers:]:
            stage.requires_grad_(False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: Tensor[N, 3, H, W] -> (Tensor[N, C4, H/16, W/16], Tensor[N, C5, H/16, W/16])."""
        x = self.layer2(self.layer1(self.stem(x)))
        c4 = self.layer3(x)
        return c4, self.layer4(c4)


def _out_channels(layer: nn.Sequential) -> int:
    last = layer[-1]
    conv = last.conv3 if hasattr(last, "conv3") else last.conv2
    return conv.out_channels


class DeformConv3x3(nn.Module):
    """A 3×3 convolution made deformable (Dai et al. 2017): a zero-initialised 3×3 conv
    predicts the sampling offsets (`offset_groups` groups; Deformable-ConvNets uses 4 in
    conv5), `torchvision.ops.deform_conv2d` samples; stride, padding and dilation are kept.
    The weight keeps the name `weight`, so ImageNet ResNet weights load into it."""

    def __init__(self, conv: nn.Conv2d, offset_groups: int = 4) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.offset_conv = nn.Conv2d(conv.in_channels, 2 * offset_groups * 9, 3,
                                     stride=conv.stride, padding=conv.padding,
                                     dilation=conv.dilation)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return deform_conv2d(x, self.offset_conv(x), self.weight, self.bias, self.stride,
                             self.padding, self.dilation)


def _deform_layer4(resnet: ResNet) -> None:
    """Every 3×3 convolution of conv5 (layer4) becomes a DeformConv3x3."""
    for block in resnet.layer4:
        for name in ("conv1", "conv2"):
            conv = getattr(block, name)
            if conv.kernel_size == (3, 3):
                setattr(block, name, DeformConv3x3(conv))


def resnet_trunk(arch: str, norm: str = "gn", trainable_layers: int = 5,
                 deform_conv5: bool = False) -> ResNetTrunk:
    """A dilated trunk with fresh weights (architecture only; see `load_backbone_weights`).

    Args:
        arch: "resnet18", "resnet50" or "resnet101".
        norm: one of NORMS (rfcn.models.spec resolves the default: "frozen_bn" with ImageNet
            weights, "gn" without).
        trainable_layers: how many stages train, from the top (ResNetTrunk).
        deform_conv5: conv5's 3×3 convolutions deformable (DeformConv3x3), dilation kept.
    """
    if arch not in _DEPTHS:
        raise ValueError(f"arch must be one of {sorted(_DEPTHS)}, got {arch!r}")
    ctor = getattr(torchvision.models, arch)
    dilation = None if arch == "resnet18" else [False, False, True]
    resnet = ctor(weights=None, norm_layer=norm_layer_factory(norm),
                  replace_stride_with_dilation=dilation)
    if arch == "resnet18":
        _dilate_basic_layer4(resnet)
    if deform_conv5:
        _deform_layer4(resnet)
    trunk = ResNetTrunk(resnet, trainable_layers)
    trunk.norm = norm
    return trunk


# torchvision ResNet state-dict prefixes -> ResNetTrunk's
_TRUNK_PREFIXES = {"conv1.": "stem.0.", "bn1.": "stem.1."}


def load_backbone_weights(trunk: ResNetTrunk, arch: str, weights_backbone: str) -> None:
    """Copy ImageNet (or any torchvision-ResNet) weights into `trunk` (its fc is dropped).

    Raises:
        ValueError: the weights do not fit `arch` (shapes, missing or unexpected tensors).
        FileNotFoundError: a path that does not exist.
    """
    state = {}
    for key, value in load_backbone_state_dict(weights_backbone).items():
        if key.startswith("fc."):
            continue
        for old, new in _TRUNK_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old):]
        state[key] = value
    try:
        missing, unexpected = trunk.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"weights_backbone {weights_backbone!r} does not fit {arch}: "
                         f"{str(exc)[:500]}") from exc
    # num_batches_tracked: FrozenBatchNorm has none; offset_conv: deformable conv5's own
    missing = [k for k in missing if not k.endswith("num_batches_tracked")
               and ".offset_conv." not in k]
    if getattr(trunk, "norm", None) == "gn":  # GroupNorm keeps the affine, has no statistics
        unexpected = [k for k in unexpected if not k.endswith(_BN_BUFFERS)]
    if missing or unexpected:
        raise ValueError(
            f"weights_backbone {weights_backbone!r} does not fit {arch}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    logger.info("loaded backbone weights from %s", weights_backbone)
