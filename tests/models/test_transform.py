"""RFCNTransform resizes exactly like torchvision's, and keeps degenerate images ≥ 1 px."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from rfcn.models.transform import RFCNTransform

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.mark.parametrize("seed", range(5))
def test_same_as_torchvision_on_ordinary_images(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    ours = RFCNTransform(224, 400, MEAN, STD, size_divisible=16).eval()
    ref = GeneralizedRCNNTransform(224, 400, MEAN, STD, size_divisible=16).eval()
    images = [torch.rand(3, int(h), int(w), generator=g)
              for h, w in torch.randint(40, 700, (3, 2), generator=g)]
    a, _ = ours(images)
    b, _ = ref(images)
    assert a.image_sizes == b.image_sizes
    torch.testing.assert_close(a.tensors, b.tensors, rtol=0, atol=0)


def test_boxes_follow_the_resize_in_training() -> None:
    ours = RFCNTransform(100, 200, MEAN, STD).train()
    target = {"boxes": torch.tensor([[10.0, 20.0, 50.0, 40.0]]), "labels": torch.tensor([1])}
    out, targets = ours([torch.rand(3, 50, 80)], [target])
    assert out.image_sizes == [(100, 160)]
    torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[20.0, 40.0, 100.0, 80.0]]))


@pytest.mark.parametrize("shape", [(24, 4000), (3000, 20)])
def test_thin_strips_keep_one_pixel(shape: tuple[int, int]) -> None:
    ours = RFCNTransform(32, 64, MEAN, STD).eval()
    out, _ = ours([torch.rand(3, *shape)])
    assert min(out.image_sizes[0]) >= 1


def test_empty_image_is_refused_with_a_message() -> None:
    with pytest.raises(ValueError, match="empty image"):
        RFCNTransform(32, 64, MEAN, STD).eval()([torch.rand(3, 0, 10)])


def test_uint8_and_float_images_give_identical_results() -> None:
    """uint8 images (what the loaders hand over) are divided by 255 where they are, then
    normalised: the same pixels as float in [0, 1] give the same batch, bit for bit."""
    g = torch.Generator().manual_seed(0)
    u8 = [torch.randint(0, 256, (3, int(h), int(w)), generator=g, dtype=torch.uint8)
          for h, w in torch.randint(40, 300, (3, 2), generator=g)]
    as_float = [im.to(torch.float32).div_(255.0) for im in u8]
    for mode in ("eval", "train"):
        tf = RFCNTransform(96, 160, MEAN, STD, size_divisible=16)
        tf.train(mode == "train")
        torch.manual_seed(1)
        a, _ = tf(u8)
        torch.manual_seed(1)
        b, _ = tf(as_float)
        assert a.tensors.dtype == torch.float32 and a.image_sizes == b.image_sizes
        assert torch.equal(a.tensors, b.tensors)
    assert all(im.dtype == torch.uint8 for im in u8)  # the inputs are not converted in place
