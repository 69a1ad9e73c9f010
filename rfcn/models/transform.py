"""Image batching for R-FCN: torchvision's GeneralizedRCNNTransform with a safe resize and
multi-scale training that the data pipeline can do first.

torchvision floors every side after scaling, so a very thin strip (24×4000 with max_size 64)
becomes 0 pixels tall and ``F.interpolate`` fails deep inside torch. Here each side keeps at
least one pixel; every other image gets exactly torchvision's size and pixels.

Training sizes: in train mode the shorter side is drawn from ``train_min_sizes`` (default:
``min_size`` alone), as torchvision draws from its ``min_size`` tuple; an image that already
has one of those sizes (the training loader resizes in its workers, rfcn.data.transforms)
is left as it is, so the loader's choice of scale is the one that counts. Eval mode always
uses ``min_size``.

Pixels: images come as float in [0, 1] (torchvision's convention) or as uint8 in 0..255, as
the data loaders hand them over (a quarter of the bytes through worker queues and host to
device copies). uint8 images are converted where they are, i.e. on the model's device once
the caller has moved them: ``x.to(float32).div_(255)``, exactly what
``rfcn.data.image_io.to_tensor`` computes, so both inputs give identical results.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes


class RFCNTransform(GeneralizedRCNNTransform):
    """Normalise, resize (shorter side ``min_size``, longer ≤ ``max_size``) and batch images
    (Tensor[3, H, W] float in [0, 1] or uint8).

    Args (besides GeneralizedRCNNTransform's): train_min_sizes: shorter sides for training,
    one drawn per image (None: ``min_size``).
    """

    def __init__(self, min_size: int, max_size: int, image_mean: list[float],
                 image_std: list[float], train_min_sizes: tuple[int, ...] | None = None,
                 **kwargs: object) -> None:
        super().__init__(min_size, max_size, image_mean, image_std, **kwargs)
        self.eval_min_size = int(min_size)
        self.train_min_sizes = tuple(int(s) for s in (train_min_sizes or (min_size,)))

    def normalize(self, image: Tensor) -> Tensor:
        """Tensor[3, H, W] float in [0, 1] or uint8 -> normalised float (float32 for uint8)."""
        if image.dtype == torch.uint8:  # one pass: convert and lay out as [3, H, W]
            image = image.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
        return super().normalize(image)

    def _already_sized(self, h: int, w: int) -> bool:
        """Within a pixel of a training size (the loader resized it already)."""
        return any(abs(min(s / min(h, w), self.max_size / max(h, w)) - 1.0) * min(h, w) < 1.0
                   for s in self.train_min_sizes)

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        h, w = image.shape[-2:]
        if h == 0 or w == 0:
            raise ValueError(f"images: got an empty image of size {h}x{w}")
        if self.training:
            # drawn even when unused, so the RNG stream does not depend on the image sizes
            size = float(self.torch_choice(list(self.train_min_sizes)))
            if self._already_sized(h, w):
                return image, target
        else:
            size = float(self.eval_min_size)
        scale = min(size / min(h, w), float(self.max_size) / max(h, w))
        # Same output size as torchvision's scale_factor path (floor in double), clamped to 1 px.
        new_size = (max(1, math.floor(h * scale)), max(1, math.floor(w * scale)))
        image = F.interpolate(image[None], size=new_size, mode="bilinear", align_corners=False)[0]
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], (h, w), image.shape[-2:])
        return image, target


__all__ = ["RFCNTransform"]
