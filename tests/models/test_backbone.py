"""Dilated trunk: stride 16 everywhere, ImageNet-style weights from a local file, freezing."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from rfcn.models import rfcn_resnet18
from rfcn.models.backbone import resnet_trunk


@pytest.mark.parametrize(("arch", "c4", "c5"), [("resnet18", 256, 512), ("resnet50", 1024, 2048)])
def test_conv5_is_dilated_to_stride_16(arch: str, c4: int, c5: int) -> None:
    trunk = resnet_trunk(arch).eval()
    with torch.no_grad():
        f4, f5 = trunk(torch.rand(1, 3, 64, 96))
    assert f4.shape == (1, c4, 4, 6) and f5.shape == (1, c5, 4, 6)
    assert (trunk.out_channels_c4, trunk.out_channels_c5) == (c4, c5)
    dilations = {m.dilation for m in trunk.layer4.modules() if isinstance(m, nn.Conv2d)}
    assert (2, 2) in dilations
    assert all(m.stride == (1, 1) for m in trunk.layer4.modules() if isinstance(m, nn.Conv2d))


def test_random_init_uses_trainable_groupnorm_everywhere() -> None:
    trunk = resnet_trunk("resnet18")
    assert any(isinstance(m, nn.GroupNorm) for m in trunk.modules())
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in trunk.modules())
    assert all(p.requires_grad for p in trunk.parameters())


def test_weights_backbone_from_local_pth(tmp_path) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18()
    for m in resnet.modules():  # non-trivial statistics to check they are loaded
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    path = tmp_path / "r18.pth"
    torch.save(resnet.state_dict(), path)
    model = rfcn_resnet18(3, weights_backbone=str(path), head_dim=16, rpn_dim=16)
    trunk = model.trunk
    torch.testing.assert_close(trunk.stem[0].weight, resnet.conv1.weight)
    torch.testing.assert_close(trunk.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)
    torch.testing.assert_close(trunk.layer3[0].bn1.running_mean, resnet.layer3[0].bn1.running_mean)
    norms = [m for m in trunk.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert not norms and isinstance(trunk.stem[1], FrozenBatchNorm2d)
    assert not any(p.requires_grad for p in trunk.stem.parameters())
    assert not any(p.requires_grad for p in trunk.layer1.parameters())
    assert all(p.requires_grad for p in trunk.layer2.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    # the trunk computes what the torchvision ResNet computes up to conv4 (eval-mode BN)
    resnet.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = resnet.layer3(resnet.layer2(resnet.layer1(resnet.maxpool(resnet.relu(
            resnet.bn1(resnet.conv1(x)))))))
        torch.testing.assert_close(trunk(x)[0], ref, rtol=1e-4, atol=1e-5)


def test_weights_backbone_of_another_arch_is_rejected(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(ValueError, match="does not fit resnet18"):
        rfcn_resnet18(3, weights_backbone=str(path))


def test_trainable_layers_and_norm_overrides() -> None:
    trunk = resnet_trunk("resnet18", norm="bn", trainable_layers=1)
    assert isinstance(trunk.stem[1], nn.BatchNorm2d)
    assert all(p.requires_grad for p in trunk.layer4.parameters())
    assert not any(p.requires_grad for p in trunk.layer3.parameters())
    with pytest.raises(ValueError, match="trainable_layers"):
        resnet_trunk("resnet18", trainable_layers=6)
