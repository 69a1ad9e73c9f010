"""The PS RoI ops in plain tensor ops (rfcn.export.ps_ops_torch) equal our kernels, in eager
and exported to ONNX and run by a stock onnxruntime (no custom-op library)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from rfcn.export.ps_ops_torch import ps_roi_align_torch, ps_roi_pool_torch
from rfcn.ops import ps_roi_align, ps_roi_pool

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SCALE = 0.5
BINS = (3, 2)
KINDS = ("inside", "border", "partial", "outside", "reversed", "tiny", "huge", "degenerate")


def make_rois(kind: str, n_img: int, h: int, w: int, k: int, gen: torch.Generator) -> Tensor:
    """Tensor[K, 5] RoIs of one kind in image coordinates (map size / SCALE)."""
    ih, iw = h / SCALE, w / SCALE
    u = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    x1, y1 = u(k) * iw, u(k) * ih
    if kind == "inside":
        x1, y1 = u(k) * (iw - 8), u(k) * (ih - 8)
        x2, y2 = x1 + u(k) * (iw - 6 - x1), y1 + u(k) * (ih - 6 - y1)
    elif kind == "border":  # touching the bottom/right border, where clipping matters
        x2, y2 = iw - 1 + u(k) * 2, ih - 1 + u(k) * 2
        x1, y1 = x1 * 0.8, y1 * 0.8
    elif kind == "partial":
        x1, y1 = x1 * 1.5 - iw * 0.5, y1 * 1.5 - ih * 0.5
        x2, y2 = x1 + u(k) * iw, y1 + u(k) * ih
    elif kind == "outside":
        x1, y1 = iw + 2 + x1, -2 * ih + y1
        x2, y2 = x1 + u(k) * iw, y1 + u(k) * ih
    elif kind == "reversed":
        x2, y2 = x1 * 0.4, y1 * 0.4
        x1, y1 = x2 + u(k) * iw * 0.4, y2 + u(k) * ih * 0.4
    elif kind == "tiny":
        x2, y2 = x1 + u(k) * 1.5, y1 + u(k) * 1.5
    elif kind == "huge":
        x1, y1 = -u(k) * iw * 3, -u(k) * ih * 3
        x2, y2 = iw + u(k) * iw * 3, ih + u(k) * ih * 3
    elif kind == "degenerate":  # zero width and height, on pixel and half-pixel positions
        x1, y1 = torch.round(x1 * 2) / 2, torch.round(y1 * 2) / 2
        x2, y2 = x1.clone(), y1.clone()
    else:
        raise ValueError(kind)
    idx = torch.randint(0, n_img, (k,), generator=gen).float()
    return torch.stack([idx, x1, y1, x2, y2], dim=1)


def _cases(seed: int) -> list[tuple[str, Tensor, Tensor]]:
    """(kind, maps Tensor[N, C, H, W], rois Tensor[K, 5]) on maps of several sizes."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for i, kind in enumerate(KINDS):
        n, h, w = 1 + i % 2, 5 + 3 * i, 17 - i
        maps = torch.randn(n, 2 * BINS[0] * BINS[1], h, w, generator=gen)
        cases.append((kind, maps, make_rois(kind, n, h, w, 12, gen)))
    maps = torch.randn(1, 2 * BINS[0] * BINS[1], 6, 7, generator=gen)
    cases.append(("no rois", maps, torch.zeros(0, 5)))
    return cases


OPS = {
    "pool": (lambda x, r: ps_roi_pool(x, r, BINS, SCALE),
             lambda x, r: ps_roi_pool_torch(x, r, BINS, SCALE)),
    "align_sr2": (lambda x, r: ps_roi_align(x, r, BINS, SCALE, 2),
                  lambda x, r: ps_roi_align_torch(x, r, BINS, SCALE, 2)),
    "align_adaptive": (lambda x, r: ps_roi_align(x, r, BINS, SCALE, -1),
                       lambda x, r: ps_roi_align_torch(x, r, BINS, SCALE, -1)),
}


class _Op(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, maps: Tensor, rois: Tensor) -> Tensor:
        return OPS[self.name][1](maps, rois)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(OPS))
def test_torch_form_equals_the_kernels(name: str, dtype: torch.dtype) -> None:
    kernel, torch_form = OPS[name]
    for kind, maps, rois in _cases(seed=1):
        maps, rois = maps.to(dtype), rois.to(dtype)
        expected = kernel(maps, rois)
        atol = 1e-6 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(torch_form(maps, rois), expected, rtol=0, atol=atol,
                                   msg=lambda m, kind=kind: f"{kind}: {m}")


def _export(name: str, path: Path) -> ort.InferenceSession:
    maps, rois = _cases(seed=0)[0][1:]
    n, k = torch.export.Dim("n", min=1, max=64), torch.export.Dim("k", min=0, max=4096)
    h, w = torch.export.Dim("h", min=2, max=4096), torch.export.Dim("w", min=2, max=4096)
    program = torch.onnx.export(
        _Op(name).eval(), (maps, rois), dynamo=True, opset_version=18, verbose=False,
        input_names=["maps", "rois"], dynamic_shapes={"maps": {0: n, 2: h, 3: w},
                                                      "rois": {0: k}})
    program.save(str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", list(OPS))
def test_onnx_form_equals_the_kernels(name: str, tmp_path: Path) -> None:
    session = _export(name, tmp_path / f"{name}.onnx")
    ops = {node.op_type for node in _onnx_nodes(tmp_path / f"{name}.onnx")}
    assert ops.isdisjoint({"PSRoIPool", "PSRoIAlign"}) and not any("rfcn" in o for o in ops)
    kernel = OPS[name][0]
    for kind, maps, rois in _cases(seed=2):
        (got,) = session.run(None, {"maps": maps.numpy(), "rois": rois.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), kernel(maps, rois), rtol=0,
                                   atol=1e-6, msg=lambda m, kind=kind: f"{kind}: {m}")


def _onnx_nodes(path: Path) -> list:
    import onnx

    model = onnx.load(str(path))
    return list(model.graph.node) + [n for f in model.functions for n in f.node]
