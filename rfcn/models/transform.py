"""Image batching for R-FCN: torchvision's GeneralizedRCNNTransform with a safe resize.

torchvision floors every side after scaling, so a very thin strip (24×4000 with max_size 64)
becomes 0 pixels tall and ``F.interpolate`` fails deep inside torch. Here each side keeps at
least one pixel; every other image gets exactly torchvision's size and pixels.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes


class RFCNTransform(GeneralizedRCNNTransform):
    """Normalise, resize (shorter side ``min_size``, longer ≤ ``max_size``) and batch images."""

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        h, w = image.shape[-2:]
        if h == 0 or w == 0:
            raise ValueError(f"images: got an empty image of size {h}x{w}")
        if self.training:
            size = float(self.torch_choice(self.min_size))
        else:
            size = float(self.min_size[-1])
        scale = min(size / min(h, w), float(self.max_size) / max(h, w))
        # Same output size as torchvision's scale_factor path (floor in double), clamped to 1 px.
        new_size = (max(1, math.floor(h * scale)), max(1, math.floor(w * scale)))
        image = F.interpolate(image[None], size=new_size, mode="bilinear", align_corners=False)[0]
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], (h, w), image.shape[-2:])
        return image, target


__all__ = ["RFCNTransform"]
