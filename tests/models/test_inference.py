"""inference_copy: BatchNorm folded into the convolutions, same detections as the original."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from rfcn.models import rfcn_resnet18
from rfcn.models.inference import fold_batchnorm, inference_copy


def _model(norm: str) -> nn.Module:
    torch.manual_seed(0)
    model = rfcn_resnet18(5, min_size=96, max_size=160, k=3, ps_op="align", norm=norm,
                          box_score_thresh=0.0, head_dim=32, rpn_dim=32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        _randomise_norms(model, gen)
    return model.eval()


def _randomise_norms(model: nn.Module, gen: torch.Generator) -> None:
    for mod in model.modules():  # non-trivial statistics and affine, so folding matters
        if isinstance(mod, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen) + 0.5)
            mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=gen) * 0.2)
            mod.weight.copy_(torch.rand(mod.weight.shape, generator=gen) + 0.5)
            mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.1)


@pytest.mark.parametrize("norm", ["bn", "frozen_bn", "gn"])
def test_inference_copy_gives_the_same_detections(norm: str) -> None:
    model = _model(norm)
    fast = inference_copy(model)
    bn_left = [m for m in fast.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert bn_left == []
    images = [torch.rand(3, 120, 150), torch.rand(3, 96, 130)]
    with torch.no_grad():
        ref, out = model(images), fast(images)
    for r, o in zip(ref, out, strict=True):
        assert len(r["boxes"]) > 0
        torch.testing.assert_close(o["scores"], r["scores"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(o["boxes"], r["boxes"], rtol=1e-4, atol=1e-2)
        assert torch.equal(o["labels"], r["labels"])


def test_original_model_is_untouched() -> None:
    model = _model("bn").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inference_copy(model)
    assert model.training
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fold_counts_every_resnet_pair_and_refuses_training_bn() -> None:
    model = _model("bn")
    # ResNet-18: stem 1 + 8 blocks x 2 + 3 downsample convs
    assert fold_batchnorm(model.trunk) == 1 + 16 + 3
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(_model("bn").train())


def test_conv_bn_outside_known_containers_is_left_alone() -> None:
    class Custom(nn.Module):  # forward order unknown: bn is not applied after conv
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.bn(x))

    assert fold_batchnorm(Custom().eval()) == 0
