"""Builders rfcn_resnet18/50/101 with torchvision-style keyword arguments, and
`rfcn_from_spec`, the one place an `RFCNSpec` becomes modules.

Architecture and initialisation are separate steps. `RFCNSpec.create` resolves the keyword
arguments once (defaults below; the trunk's `norm` and `trainable_layers` depend on whether
it starts from ImageNet weights); `rfcn_from_spec` builds that architecture with fresh
weights; then the builder initialises: ImageNet weights into the trunk (`weights_backbone`),
or every weight from an rfcn checkpoint (`weights`, through rfcn.checkpoint, the one
checkpoint loader). The model keeps its spec (`model.spec`), which the trainer stores in every
checkpoint, so resume, fine-tune, eval, infer and export rebuild exactly this model.

Keyword arguments and their defaults (rfcn.models.spec holds them):

    images:  min_size=600, max_size=1000, image_mean/std=ImageNet's, size_divisible=16,
             train_min_sizes=() (multi-scale training: shorter side drawn per image; () = min_size)
    RPN:     rpn_pre_nms_top_n_train=6000, rpn_pre_nms_top_n_test=6000,
             rpn_post_nms_top_n_train=300, rpn_post_nms_top_n_test=300, rpn_nms_thresh=0.7,
             rpn_fg_iou_thresh=0.7, rpn_bg_iou_thresh=0.3, rpn_batch_size_per_image=256,
             rpn_positive_fraction=0.5, rpn_score_thresh=0.0,
             anchor_sizes=(64, 128, 256, 512), aspect_ratios=(0.5, 1.0, 2.0),
             rpn_dim=512 (ResNet-18: 256), width of the RPN's 3×3 conv
    head:    k=7, head_dim=1024 (ResNet-18: 256), class_agnostic_bbox=True, ps_op="pool"
             ("align", or "deform": Deformable R-FCN's PS pooling with learned bin offsets),
             bbox_reg_weights=(10, 10, 5, 5), deform_trans_std=0.1, deform_sample_per_part=4
    train:   box_fg_iou_thresh=0.5, box_bg_iou_thresh=0.5, box_batch_size_per_image=128,
             box_positive_fraction=0.25, ohem=True, ohem_nms_thresh=0.7 (OHEM keeps
             box_batch_size_per_image RoIs per image), box_loss="smooth_l1" ("giou", "diou",
             "ciou": IoU losses on the decoded boxes), box_loss_weight=1.0
    eval:    box_score_thresh=0.05, box_nms_thresh=0.3, box_detections_per_img=100,
             box_nms="nms" (or "soft_linear" / "soft_gaussian": soft-NMS), soft_nms_sigma=0.5,
             soft_nms_min_score=0.001
    trunk:   norm=None -> "frozen_bn" with weights_backbone, else "gn" (see backbone.NORMS),
             trainable_layers=None -> 3 with weights_backbone (stem + res2 frozen), else 5,
             deform_conv5=False (conv5's 3×3 convs deformable, torchvision.ops.deform_conv2d)

Normalisation from scratch: GroupNorm by default, as it does not depend on the per-process
batch size (DDP); the CPU quickstart config (configs/model/rfcn_r18.yaml) sets norm="bn",
which trained faster there (README, "Ablation", has the measurements).

`norm="frozen_bn"` without ImageNet weights makes every normalisation the identity; the
builder warns with `FrozenBNWithoutWeightsWarning`, which a deliberate user (a benchmark)
silences the standard way: `warnings.filterwarnings("ignore",
category=FrozenBNWithoutWeightsWarning)`.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from torchvision.models.detection._utils import BoxCoder

from rfcn.models.backbone import load_backbone_weights, resnet_trunk
from rfcn.models.losses import BoxRegressionLoss
from rfcn.models.postprocess import DetectionPostProcessor
from rfcn.models.ps_head import PSRoIHead
from rfcn.models.rfcn import RFCN
from rfcn.models.roi_sampling import RoITargetAssigner
from rfcn.models.rpn import build_rpn
from rfcn.models.spec import RFCNSpec
from rfcn.models.transform import RFCNTransform
from rfcn.models.weights import CheckpointError, load_checkpoint, load_model_state

__all__ = [
    "FrozenBNWithoutWeightsWarning",
    "rfcn_from_checkpoint",
    "rfcn_from_spec",
    "rfcn_resnet18",
    "rfcn_resnet50",
    "rfcn_resnet101",
]

logger = logging.getLogger(__name__)


class FrozenBNWithoutWeightsWarning(UserWarning):
    """norm="frozen_bn" on a trunk that does not start from ImageNet weights."""


def rfcn_from_spec(spec: RFCNSpec) -> RFCN:
    """The architecture of `spec` with fresh weights (no file is read); `model.spec = spec`."""
    trunk = resnet_trunk(spec.trunk.arch, norm=spec.trunk.norm,
                         trainable_layers=spec.trunk.trainable_layers,
                         deform_conv5=spec.trunk.deform_conv5)
    im = spec.images
    transform = RFCNTransform(im.min_size, im.max_size, list(im.image_mean), list(im.image_std),
                              train_min_sizes=im.training_sizes,
                              size_divisible=im.size_divisible)
    r = spec.rpn
    rpn = build_rpn(
        trunk.out_channels_c4, r.rpn_dim, r.anchor_sizes, r.aspect_ratios,
        pre_nms_top_n={"training": r.rpn_pre_nms_top_n_train,
                       "testing": r.rpn_pre_nms_top_n_test},
        post_nms_top_n={"training": r.rpn_post_nms_top_n_train,
                        "testing": r.rpn_post_nms_top_n_test},
        nms_thresh=r.rpn_nms_thresh, fg_iou_thresh=r.rpn_fg_iou_thresh,
        bg_iou_thresh=r.rpn_bg_iou_thresh, batch_size_per_image=r.rpn_batch_size_per_image,
        positive_fraction=r.rpn_positive_fraction, score_thresh=r.rpn_score_thresh,
    )
    h = spec.head
    head = PSRoIHead(trunk.out_channels_c5, h.head_dim, spec.num_classes, h.k,
                     h.class_agnostic_bbox, h.ps_op, trans_std=h.deform_trans_std,
                     sample_per_part=h.deform_sample_per_part)
    box_coder = BoxCoder(tuple(float(w) for w in h.bbox_reg_weights))
    s = spec.roi_sampling
    assigner = RoITargetAssigner(box_coder, s.box_fg_iou_thresh, s.box_bg_iou_thresh,
                                 s.box_batch_size_per_image, s.box_positive_fraction)
    p = spec.post
    postprocessor = DetectionPostProcessor(box_coder, p.box_score_thresh, p.box_nms_thresh,
                                           p.box_detections_per_img, p.box_nms,
                                           p.soft_nms_sigma, p.soft_nms_min_score)
    model = RFCN(transform, trunk, rpn, head, assigner, postprocessor, ohem=s.ohem,
                 ohem_batch_size_per_image=s.box_batch_size_per_image,
                 ohem_nms_thresh=s.ohem_nms_thresh,
                 box_loss=BoxRegressionLoss(s.box_loss, box_coder, s.box_loss_weight))
    model.spec = spec
    return model


def _build(
    arch: str,
    num_classes: int,
    weights: str | None,
    weights_backbone: str | None,
    **kwargs: Any,
) -> RFCN:
    if weights is not None:
        return _from_checkpoint(arch, num_classes, weights, kwargs)
    spec = RFCNSpec.create(arch, num_classes, pretrained=weights_backbone is not None, **kwargs)
    model = rfcn_from_spec(spec)
    if weights_backbone is not None:
        load_backbone_weights(model.trunk, arch, weights_backbone)
    elif spec.trunk.norm == "frozen_bn":
        warnings.warn(
            "norm='frozen_bn' with a randomly initialised trunk: every normalisation is the "
            "identity (pass weights_backbone=..., or silence FrozenBNWithoutWeightsWarning)",
            FrozenBNWithoutWeightsWarning,
            stacklevel=3,
        )
    return model


def rfcn_from_checkpoint(
    ckpt: dict[str, Any], source: str, spec: RFCNSpec | None = None, **overrides: Any,
) -> RFCN:
    """The model a loaded checkpoint stores, with its weights: the one way a checkpoint
    becomes a model (eval, infer, export, `weights=`).

    `spec` defaults to the checkpoint's `model_spec` (a caller that knows better, e.g. for a
    format-1 checkpoint or a bare state dict, passes it); `overrides` change settings that do
    not alter the weights (thresholds, sizes, post-processing); None values are ignored.

    Raises:
        CheckpointError: no usable spec, or weights that do not fit it (naming the tensors).
    """
    if spec is None:
        if not isinstance(ckpt.get("model_spec"), dict):
            raise CheckpointError(f"{source} has no model_spec: not an rfcn checkpoint")
        try:
            spec = RFCNSpec.from_dict(ckpt["model_spec"])
        except ValueError as e:
            raise CheckpointError(f"{source}: {e}") from e
    spec = spec.replace(**{k: v for k, v in overrides.items() if v is not None})
    model = rfcn_from_spec(spec)
    load_model_state(model, ckpt, architecture=spec.builder, source=source)
    return model


def _from_checkpoint(arch: str, num_classes: int, weights: str, kwargs: dict[str, Any]) -> RFCN:
    """`weights=`: the checkpoint's model, which must be a rfcn_`arch` with `num_classes`. A
    bare state dict is read as the architecture the caller's arguments describe."""
    ckpt = load_checkpoint(weights)
    if not isinstance(ckpt.get("model_spec"), dict):
        return rfcn_from_checkpoint(ckpt, str(weights), RFCNSpec.create(arch, num_classes,
                                                                        **kwargs))
    spec = RFCNSpec.from_dict(ckpt["model_spec"])
    if spec.trunk.arch != arch:
        raise CheckpointError(f"{weights} is a rfcn_{spec.trunk.arch}, not a rfcn_{arch}")
    if spec.num_classes != num_classes:
        raise CheckpointError(
            f"{weights} has {spec.num_classes} classes (background included), not "
            f"{num_classes}; fine-tune with tools/train.py model.weights=... for another count")
    model = rfcn_from_checkpoint(ckpt, str(weights), spec, **kwargs)
    logger.info("loaded rfcn weights from %s", weights)
    return model


def rfcn_resnet18(
    num_classes: int, weights: str | None = None, weights_backbone: str | None = None,
    **kwargs: Any,
) -> RFCN:
    """R-FCN with a dilated ResNet-18 trunk; lighter defaults for CPU training from scratch:
    head_dim=256, rpn_dim=256 (see the module docstring for every kwarg)."""
    return _build("resnet18", num_classes, weights, weights_backbone, **kwargs)


def rfcn_resnet50(
    num_classes: int, weights: str | None = None, weights_backbone: str | None = None,
    **kwargs: Any,
) -> RFCN:
    """R-FCN with a dilated ResNet-50 trunk (see the module docstring for every kwarg)."""
    return _build("resnet50", num_classes, weights, weights_backbone, **kwargs)


def rfcn_resnet101(
    num_classes: int, weights: str | None = None, weights_backbone: str | None = None,
    **kwargs: Any,
) -> RFCN:
    """R-FCN with a dilated ResNet-101 trunk (see the module docstring for every kwarg)."""
    return _build("resnet101", num_classes, weights, weights_backbone, **kwargs)
