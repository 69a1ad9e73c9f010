"""The ops as drop-ins for torchvision's in FX-based tools: symbolic tracing (which
torchvision's feature extraction and FX quantization use) records each op as one leaf call,
and the traced graph computes the same values and still checks its arguments."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor

from rfcn.ops import DeformPSRoIPool, PSRoIAlign, PSRoIPool


class _Head(nn.Module):
    """A user's head: 1x1 conv to k*k*C maps, then a PS op, then voting."""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 9 * 2, 1)
        self.pool = pool

    def forward(self, x: Tensor, rois: Tensor) -> Tensor:
        return self.pool(self.conv(x), rois).mean(dim=(2, 3))


def _inputs() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 12, 16, generator=g)
    rois = torch.tensor([[0, 1.0, 2.0, 40.0, 30.0], [1, 10.0, 5.0, 60.0, 44.0]])
    return x, rois


@pytest.mark.parametrize("pool", [PSRoIPool(3, 0.25), PSRoIAlign(3, 0.25, 2),
                                  DeformPSRoIPool(3, 0.25)], ids=["pool", "align", "deform"])
def test_symbolic_trace_records_the_op_as_one_leaf(pool: nn.Module) -> None:
    head = _Head(pool).eval()
    traced = torch.fx.symbolic_trace(head)
    leaves = [n for n in traced.graph.nodes if n.op == "call_function"
              and getattr(n.target, "__module__", "").startswith("rfcn.ops")]
    assert len(leaves) == 1
    x, rois = _inputs()
    torch.testing.assert_close(traced(x, rois), head(x, rois), rtol=0, atol=0)


def test_traced_graph_still_checks_its_arguments() -> None:
    traced = torch.fx.symbolic_trace(_Head(PSRoIPool(3, 0.25)))
    x, rois = _inputs()
    bad = rois.clone()
    bad[0, 0] = 5  # batch index out of range
    with pytest.raises(ValueError, match="batch index"):
        traced(x, bad)


def test_torchvision_feature_extraction_through_a_ps_op() -> None:
    head = _Head(PSRoIAlign(3, 0.25, 2)).eval()
    extractor = create_feature_extractor(head, return_nodes={"pool": "pooled"})
    x, rois = _inputs()
    out = extractor(x, rois)["pooled"]
    assert out.shape == (2, 2, 3, 3)
    torch.testing.assert_close(out, head.pool(head.conv(x), rois))
