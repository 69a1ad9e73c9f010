"""`RFCNSpec`: every number that decides an R-FCN, resolved once, in groups.

A spec is what a checkpoint stores to rebuild its model exactly: the trunk
(depth, normalisation, trainable stages), image sizes, RPN, head, RoI sampling and
post-processing. Initialisation (ImageNet weights, an rfcn checkpoint) is not part of it:
`rfcn.models.builders` builds a spec's architecture with fresh weights, then loads weights.

Flat names are torchvision's keyword names (`min_size`, `rpn_post_nms_top_n_test`,
`box_score_thresh`, ...) plus R-FCN's own (`k`, `ps_op`, `norm`, ...); each belongs to exactly
one group, so `RFCNSpec.create(arch, num_classes, **flat_kwargs)` and `spec.replace(**kw)` take
the builders' keyword arguments. `ARCHITECTURE` names the fields that decide the parameters
and which of them train (a fine-tune keeps them from its checkpoint); the others are settings
that may change between runs (sizes, thresholds, sampling).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "ARCHITECTURE",
    "ARCHS",
    "HeadSpec",
    "ImageSpec",
    "NORMS",
    "PS_OPS",
    "PostSpec",
    "RFCNSpec",
    "RPNSpec",
    "RoISamplingSpec",
    "TrunkSpec",
]

ARCHS = ("resnet18", "resnet50", "resnet101")
NORMS = ("frozen_bn", "bn", "gn")
PS_OPS = ("pool", "align", "deform")
BOX_NMS = ("nms", "soft_linear", "soft_gaussian")
BOX_LOSSES = ("smooth_l1", "giou", "diou", "ciou")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SPEC_VERSION = 1


@dataclass(frozen=True)
class TrunkSpec:
    """Dilated ResNet trunk. `trainable_layers` of (layer4, layer3, layer2, layer1, stem)
    train, counted from the top (5: all; 3: stem + res2 frozen, the paper's fine-tuning)."""

    arch: str = "resnet50"
    norm: str = "gn"
    trainable_layers: int = 5
    deform_conv5: bool = False  # conv5's 3×3 convolutions deformable (Dai et al. 2017)

    def __post_init__(self) -> None:
        _choice("arch", self.arch, ARCHS)
        _choice("norm", self.norm, NORMS)
        if not 0 <= self.trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in [0, 5], got {self.trainable_layers}")


@dataclass(frozen=True)
class ImageSpec:
    """Resize (shorter side `min_size`, longer at most `max_size`), normalisation, padding;
    multi-scale training draws the shorter side from `train_min_sizes` (empty: min_size)."""

    min_size: int = 600
    max_size: int = 1000
    image_mean: tuple[float, ...] = IMAGENET_MEAN
    image_std: tuple[float, ...] = IMAGENET_STD
    size_divisible: int = 16
    train_min_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.min_size < 1 or self.max_size < self.min_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got min_size={self.min_size}, "
                             f"max_size={self.max_size}")
        if any(int(s) < 1 for s in self.train_min_sizes):
            raise ValueError(f"train_min_sizes must be positive, got {self.train_min_sizes}")

    @property
    def training_sizes(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.train_min_sizes) or (int(self.min_size),)


@dataclass(frozen=True)
class RPNSpec:
    """Region proposals on conv4: anchors, the 3×3 conv width, NMS and sampling."""

    rpn_dim: int = 512
    anchor_sizes: tuple[int, ...] = (64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 6000
    rpn_pre_nms_top_n_test: int = 6000
    rpn_post_nms_top_n_train: int = 300
    rpn_post_nms_top_n_test: int = 300
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_score_thresh: float = 0.0

    def __post_init__(self) -> None:
        if not self.anchor_sizes or not self.aspect_ratios:
            raise ValueError("anchor_sizes and aspect_ratios must not be empty")
        if min(self.anchor_sizes) <= 0 or min(self.aspect_ratios) <= 0:
            raise ValueError(f"anchor sizes and ratios must be positive, got "
                             f"{self.anchor_sizes} / {self.aspect_ratios}")


@dataclass(frozen=True)
class HeadSpec:
    """Position-sensitive head: k×k bins, 1×1 reduction width, box maps, the PS op."""

    k: int = 7
    head_dim: int = 1024
    class_agnostic_bbox: bool = True
    ps_op: str = "pool"
    bbox_reg_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)
    deform_trans_std: float = 0.1  # ps_op="deform": offset scale (Deformable-ConvNets)
    deform_sample_per_part: int = 4  # ps_op="deform": bilinear samples per bin side

    def __post_init__(self) -> None:
        _choice("ps_op", self.ps_op, PS_OPS)
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if len(self.bbox_reg_weights) != 4:
            raise ValueError(f"bbox_reg_weights must be 4 numbers, got {self.bbox_reg_weights}")


@dataclass(frozen=True)
class RoISamplingSpec:
    """Training RoIs: IoU thresholds, the balanced sample, or OHEM's hardest RoIs."""

    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 128
    box_positive_fraction: float = 0.25
    ohem: bool = True
    ohem_nms_thresh: float = 0.7
    # head box loss: smooth-L1 on the encoded deltas, or an IoU loss on the decoded boxes
    # (torchvision.ops generalized / distance / complete IoU), times box_loss_weight
    box_loss: str = "smooth_l1"
    box_loss_weight: float = 1.0

    def __post_init__(self) -> None:
        _choice("box_loss", self.box_loss, BOX_LOSSES)
        if self.box_loss_weight < 0:
            raise ValueError(f"box_loss_weight must be >= 0, got {self.box_loss_weight}")


@dataclass(frozen=True)
class PostSpec:
    """Eval-mode detections: score threshold, per-class NMS or soft-NMS, top-k."""

    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.3
    box_detections_per_img: int = 100
    box_nms: str = "nms"  # nms | soft_linear | soft_gaussian (Bodla et al. 2017)
    soft_nms_sigma: float = 0.5
    soft_nms_min_score: float = 0.001

    def __post_init__(self) -> None:
        _choice("box_nms", self.box_nms, BOX_NMS)


_GROUPS: dict[str, type] = {
    "trunk": TrunkSpec,
    "images": ImageSpec,
    "rpn": RPNSpec,
    "head": HeadSpec,
    "roi_sampling": RoISamplingSpec,
    "post": PostSpec,
}
# flat keyword name -> its group
_GROUP_OF: dict[str, str] = {f.name: g for g, cls in _GROUPS.items() for f in fields(cls)}
ARCHITECTURE = frozenset(
    {"arch", "norm", "trainable_layers", "deform_conv5", "image_mean", "image_std", "rpn_dim",
     "anchor_sizes", "aspect_ratios", "k", "head_dim", "class_agnostic_bbox", "ps_op",
     "bbox_reg_weights", "deform_trans_std", "deform_sample_per_part"}
)
# lighter defaults for ResNet-18 (its conv4/conv5 are 256/512 wide, not 1024/2048)
_ARCH_DEFAULTS: dict[str, dict[str, Any]] = {"resnet18": {"head_dim": 256, "rpn_dim": 256}}


@dataclass(frozen=True)
class RFCNSpec:
    """A resolved R-FCN: `num_classes` (background included) and the groups above."""

    num_classes: int
    trunk: TrunkSpec = field(default_factory=TrunkSpec)
    images: ImageSpec = field(default_factory=ImageSpec)
    rpn: RPNSpec = field(default_factory=RPNSpec)
    head: HeadSpec = field(default_factory=HeadSpec)
    roi_sampling: RoISamplingSpec = field(default_factory=RoISamplingSpec)
    post: PostSpec = field(default_factory=PostSpec)

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(
                f"num_classes counts the background and must be >= 2, got {self.num_classes}")

    # ---- construction ------------------------------------------------------------------

    @classmethod
    def create(
        cls, arch: str, num_classes: int, *, pretrained: bool = False, **kwargs: Any
    ) -> RFCNSpec:
        """The spec of a fresh build: builder defaults, then `kwargs` (flat names).

        `norm=None` / `trainable_layers=None` (or absent) resolve here, once: with an
        ImageNet-initialised trunk (`pretrained`) frozen BatchNorm and stem + res2 frozen,
        as the paper fine-tunes; from scratch GroupNorm and every stage trained.
        """
        values = {**_ARCH_DEFAULTS.get(arch, {}),
                  **{k: v for k, v in kwargs.items() if v is not None}}
        values.setdefault("norm", "frozen_bn" if pretrained else "gn")
        values.setdefault("trainable_layers", 3 if pretrained else 5)
        return cls(num_classes=num_classes).replace(arch=arch, **values)

    def replace(self, **kwargs: Any) -> RFCNSpec:
        """A copy with flat fields changed (`num_classes` too); unknown names raise TypeError."""
        num_classes = int(kwargs.pop("num_classes", self.num_classes))
        unknown = sorted(k for k in kwargs if k not in _GROUP_OF)
        if unknown:
            raise TypeError(f"unknown R-FCN option(s) {unknown}; known: {sorted(_GROUP_OF)}")
        groups = {}
        for name in _GROUPS:
            mine = {k: _normalise(v) for k, v in kwargs.items() if _GROUP_OF[k] == name}
            groups[name] = dataclasses.replace(getattr(self, name), **mine)
        return RFCNSpec(num_classes=num_classes, **groups)

    # ---- views -------------------------------------------------------------------------

    @property
    def builder(self) -> str:
        """The builder's name, e.g. "rfcn_resnet50"."""
        return f"rfcn_{self.trunk.arch}"

    def flat(self) -> dict[str, Any]:
        """Every field by its flat name (num_classes included)."""
        out: dict[str, Any] = {"num_classes": self.num_classes}
        for name in _GROUPS:
            out.update(dataclasses.asdict(getattr(self, name)))
        return out

    def architecture(self) -> dict[str, Any]:
        return {k: v for k, v in self.flat().items() if k in ARCHITECTURE}

    def settings(self) -> dict[str, Any]:
        """The fields that are not architecture (num_classes excluded)."""
        return {k: v for k, v in self.flat().items()
                if k not in ARCHITECTURE and k != "num_classes"}

    def differences(self, other: RFCNSpec, names: Sequence[str] | None = None) -> list[str]:
        """`"name: mine vs other"` for each differing field (of `names`, default all)."""
        a, b = self.flat(), other.flat()
        keys = list(a) if names is None else [k for k in a if k in names]
        return [f"{k}: {_show(a[k])} vs {_show(b[k])}" for k in keys if a[k] != b[k]]

    # ---- plain data (checkpoints) ------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (lists, numbers, strings): loads with weights_only=True."""
        out: dict[str, Any] = {"version": _SPEC_VERSION, "num_classes": self.num_classes}
        for name in _GROUPS:
            out[name] = {k: list(v) if isinstance(v, tuple) else v
                         for k, v in dataclasses.asdict(getattr(self, name)).items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RFCNSpec:
        """Inverse of `to_dict`; a malformed dict raises ValueError naming what is wrong."""
        if not isinstance(data, dict) or "num_classes" not in data:
            raise ValueError(f"not an R-FCN spec: {str(data)[:200]}")
        flat: dict[str, Any] = {}
        for name in _GROUPS:
            group = data.get(name, {})
            if not isinstance(group, dict):
                raise ValueError(f"R-FCN spec: '{name}' must be a dict, got {group!r}")
            flat.update(group)
        try:
            return cls(num_classes=int(data["num_classes"])).replace(**flat)
        except TypeError as e:
            raise ValueError(f"R-FCN spec: {e}") from e


def _normalise(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else repr(value)


def _choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
