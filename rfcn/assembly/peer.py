"""torchvision's Faster R-CNN as a peer to measure rfcn against (scripts/peer_torchvision.py).

`build_peer_model` makes `fasterrcnn_resnet50_fpn`'s family with a ResNet-18 FPN trunk from
scratch, sized like the R-FCN of the same run: the same image sizes (the shorter side drawn
from the spec's training sizes, the same `max_size`), anchors from the spec's smallest size up
one octave per FPN level, trainable BatchNorm (the from-scratch trunk of rfcn's R-18
quickstart; torchvision's default FrozenBatchNorm is the identity without ImageNet weights).
Everything else is torchvision's default. `PeerDetector` takes the uint8 images that rfcn's
loader hands over (rfcn converts them in its own transform), so the trainer, evaluator and
loader are rfcn's own and only the model differs.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from rfcn.models.spec import RFCNSpec

__all__ = ["PeerDetector", "build_peer_model"]

_FPN_LEVELS = 5  # "0".."3" and "pool"


class PeerDetector(nn.Module):
    """A torchvision detector behind rfcn's calling convention (uint8 or [0, 1] images)."""

    def __init__(self, detector: nn.Module, description: str, train_sizes: tuple[int, ...],
                 test_size: int) -> None:
        super().__init__()
        self.detector = detector
        self.description = description
        self.train_sizes, self.test_size = tuple(train_sizes), int(test_size)

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        images = [img.float().div(255.0) if not img.is_floating_point() else img
                  for img in images]
        # torchvision draws the shorter side from min_size in training, tests at min_size[-1]
        self.detector.transform.min_size = self.train_sizes if self.training else (
            self.test_size,)
        if self.training:
            return self.detector(images, targets)
        return self.detector(images)


def build_peer_model(spec: RFCNSpec, num_classes: int) -> PeerDetector:
    """Faster R-CNN, ResNet-18 FPN from scratch, at the image sizes and anchors of `spec`
    (`num_classes` counts the background, as rfcn's)."""
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                                   norm_layer=nn.BatchNorm2d)
    smallest = int(min(spec.rpn.anchor_sizes))
    sizes = tuple((smallest * 2**i,) for i in range(_FPN_LEVELS))
    ratios = (tuple(float(r) for r in spec.rpn.aspect_ratios),) * _FPN_LEVELS
    im = spec.images
    detector = FasterRCNN(
        backbone, num_classes=num_classes, min_size=tuple(im.training_sizes),
        max_size=int(im.max_size), image_mean=list(im.image_mean), image_std=list(im.image_std),
        rpn_anchor_generator=AnchorGenerator(sizes, ratios),
        box_detections_per_img=int(spec.post.box_detections_per_img),
    )
    description = (f"torchvision FasterRCNN, ResNet-18 FPN from scratch (BatchNorm), "
                   f"anchors {[s[0] for s in sizes]}, train sizes {list(im.training_sizes)}, "
                   f"test {im.min_size}, max {im.max_size}")
    return PeerDetector(detector, description, im.training_sizes, im.min_size)
