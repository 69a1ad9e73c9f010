"""RFCNSpec: resolved once (architecture vs initialisation), stored as plain data, rebuilt
exactly; the frozen-BN warning can be silenced; the config schema lists the same options."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import torchvision

from rfcn.models import rfcn_resnet18
from rfcn.models.builders import FrozenBNWithoutWeightsWarning, rfcn_from_spec
from rfcn.models.spec import ARCHITECTURE, RFCNSpec


def test_pretrained_and_scratch_defaults_are_resolved_once() -> None:
    scratch = RFCNSpec.create("resnet50", 5)
    pretrained = RFCNSpec.create("resnet50", 5, pretrained=True)
    assert (scratch.trunk.norm, scratch.trunk.trainable_layers) == ("gn", 5)
    assert (pretrained.trunk.norm, pretrained.trunk.trainable_layers) == ("frozen_bn", 3)
    explicit = RFCNSpec.create("resnet50", 5, pretrained=True, norm="bn", trainable_layers=4)
    assert (explicit.trunk.norm, explicit.trunk.trainable_layers) == ("bn", 4)
    r18 = RFCNSpec.create("resnet18", 3)
    assert (r18.head.head_dim, r18.rpn.rpn_dim) == (256, 256)  # ResNet-18's lighter defaults
    assert r18.builder == "rfcn_resnet18"


def test_round_trip_through_plain_data() -> None:
    spec = RFCNSpec.create("resnet18", 4, pretrained=True, min_size=96, anchor_sizes=[16, 32],
                           k=3, ps_op="align", box_score_thresh=0.2)
    data = spec.to_dict()
    plain = (dict, list, str, int, float, bool, type(None))

    def check(v: object) -> None:
        assert isinstance(v, plain), type(v)
        if isinstance(v, dict):
            for x in v.values():
                check(x)
        if isinstance(v, list):
            for x in v:
                check(x)

    check(data)
    assert RFCNSpec.from_dict(data) == spec
    assert spec.replace(num_classes=7).num_classes == 7
    assert spec.differences(spec.replace(k=5)) == ["k: 3 vs 5"]
    assert set(spec.architecture()) == ARCHITECTURE


def test_bad_options_name_themselves() -> None:
    with pytest.raises(TypeError, match="not_an_option"):
        RFCNSpec.create("resnet18", 3, not_an_option=1)
    with pytest.raises(ValueError, match="norm"):
        RFCNSpec.create("resnet18", 3, norm="layernorm")
    with pytest.raises(ValueError, match="arch"):
        RFCNSpec.create("resnet34", 3)
    with pytest.raises(ValueError, match="num_classes"):
        RFCNSpec.create("resnet18", 1)
    with pytest.raises(ValueError, match="min_size"):
        RFCNSpec.create("resnet18", 3, min_size=500, max_size=400)
    with pytest.raises(ValueError, match="spec"):
        RFCNSpec.from_dict({"trunk": {}})


def test_model_keeps_its_spec_and_rebuilds_the_same_parameters() -> None:
    model = rfcn_resnet18(4, min_size=64, max_size=96, k=3, head_dim=16, rpn_dim=16)
    again = rfcn_from_spec(RFCNSpec.from_dict(model.spec.to_dict()))
    assert [(n, p.shape, p.requires_grad) for n, p in model.named_parameters()] == \
        [(n, p.shape, p.requires_grad) for n, p in again.named_parameters()]


def test_frozen_bn_warning_only_for_a_random_trunk_and_can_be_silenced(tmp_path) -> None:
    kw = dict(min_size=64, max_size=96, k=3, head_dim=16, rpn_dim=16)
    with pytest.warns(FrozenBNWithoutWeightsWarning):
        rfcn_resnet18(3, norm="frozen_bn", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning would fail here
        warnings.filterwarnings("ignore", category=FrozenBNWithoutWeightsWarning)
        model = rfcn_resnet18(3, norm="frozen_bn", **kw)
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    ckpt = tmp_path / "rfcn.pt"
    torch.save({"model": model.state_dict(), "model_spec": model.spec.to_dict()}, ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FrozenBNWithoutWeightsWarning)
        rfcn_resnet18(3, weights_backbone=str(path), **kw)  # ImageNet-style trunk: no warning
        rfcn_from_spec(model.spec)  # a rebuild whose weights come from a checkpoint
        rfcn_resnet18(3, weights=str(ckpt))


def test_weights_rebuild_the_checkpoint_spec_with_new_settings(tmp_path) -> None:
    torch.manual_seed(0)
    model = rfcn_resnet18(4, min_size=64, max_size=96, k=3, head_dim=16, rpn_dim=16,
                          norm="bn", trainable_layers=2)
    path = tmp_path / "rfcn.pt"
    torch.save({"model": model.state_dict(), "model_spec": model.spec.to_dict()}, path)
    loaded = rfcn_resnet18(4, weights=str(path), box_score_thresh=0.5)
    assert loaded.spec == model.spec.replace(box_score_thresh=0.5)
    assert [p.requires_grad for p in loaded.parameters()] == \
        [p.requires_grad for p in model.parameters()]
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    from rfcn.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="3 classes|4 classes"):
        rfcn_resnet18(3, weights=str(path))


def test_config_schema_lists_every_spec_option() -> None:
    from rfcn.config import ModelConfig

    spec_fields = set(RFCNSpec.create("resnet18", 3).flat()) - {"num_classes", "arch"}
    schema = {f.name for f in dataclasses.fields(ModelConfig)} - {
        "name", "weights", "weights_backbone"}
    assert schema == spec_fields
