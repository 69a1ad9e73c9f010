"""Registration of the PS RoI ops: torch.compile, torch.export, opcheck, autocast, bad input."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops as tvo

from rfcn.ops import ps_roi_align, ps_roi_pool

OPS = {
    "pool": (ps_roi_pool, ()),
    "align": (ps_roi_align, (2,)),
    "align_adaptive": (ps_roi_align, (-1,)),
}


def _case(dtype=torch.float32, k=6):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2 * 9, 8, 10, generator=gen, dtype=dtype)
    xy = torch.rand(k, 2, generator=gen) * 14
    rois = torch.cat(
        [torch.arange(k).remainder(2)[:, None], xy, xy + 2 + torch.rand(k, 2, generator=gen) * 10],
        1,
    )
    return x, rois.to(dtype)


@pytest.mark.parametrize("op", list(OPS))
def test_opcheck(op):
    fn, extra = OPS[op]
    x, rois = _case(torch.float64)
    x.requires_grad_()
    name = "ps_roi_pool" if op == "pool" else "ps_roi_align"
    args = (x, rois, 0.5, 3, 3, *extra)
    torch.library.opcheck(getattr(torch.ops.rfcn, name).default, args)
    g = torch.randn(rois.shape[0], 2, 3, 3, dtype=torch.float64)
    bwd = getattr(torch.ops.rfcn, name + "_backward").default
    torch.library.opcheck(bwd, (g, rois, 0.5, 3, 3, *extra, *x.shape))


@pytest.mark.parametrize("op", ["pool", "align"])
def test_compile_fullgraph_no_graph_break(op):
    fn, extra = OPS[op]
    x, rois = _case()

    def f(t, r):
        return fn(t.relu(), r, (3, 3), 0.5, *extra).sum(dim=(2, 3))

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    xr = x.clone().requires_grad_()
    out = compiled(xr, rois)
    out.sum().backward()
    xe = x.clone().requires_grad_()
    expected = f(xe, rois)
    expected.sum().backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(xr.grad, xe.grad)


@pytest.mark.parametrize("op", ["pool", "align"])
def test_export_one_node(op):
    fn, extra = OPS[op]
    name = "ps_roi_pool" if op == "pool" else "ps_roi_align"

    class M(torch.nn.Module):
        def forward(self, t, r):
            return fn(t, r, 3, 0.5, *extra)

    x, rois = _case()
    ep = torch.export.export(M(), (x, rois))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets == [getattr(torch.ops.rfcn, name).default]
    torch.testing.assert_close(ep.module()(x, rois), M()(x, rois))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("op", list(OPS))
def test_low_precision_and_autocast_compute_in_float32(op, dtype):
    fn, extra = OPS[op]
    x, rois = _case()
    xl = x.to(dtype)
    expected = fn(xl.float(), rois, 3, 0.5, *extra).to(dtype)
    # low-precision input without autocast: boxes in the input dtype
    out = fn(xl, rois.to(dtype), 3, 0.5, *extra)
    assert out.dtype == dtype
    # under CPU autocast, float32 boxes with a bf16/fp16 input are accepted
    xr = xl.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(xr, rois, 3, 0.5, *extra)
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    out.float().sum().backward()
    assert xr.grad.dtype == dtype


def test_autocast_keeps_float32_input_float32():
    x, rois = _case()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = torch.nn.functional.conv2d(x, torch.randn(18, 18, 1, 1))  # bf16 under autocast
        out = ps_roi_pool(y, rois, 3, 0.5)
        out32 = ps_roi_pool(x, rois, 3, 0.5)
    assert y.dtype == out.dtype == torch.bfloat16
    assert out32.dtype == torch.float32
    assert torch.equal(out32, tvo.ps_roi_pool(x, rois, 3, 0.5))


def _bad_inputs():
    x, rois = _case()
    return [
        ("input rank", dict(input=x[0]), ValueError, "input"),
        ("input type", dict(input=x.numpy()), TypeError, "input"),
        ("input int", dict(input=x.long(), boxes=rois.long()), TypeError, "boxes"),
        ("input int, float boxes", dict(input=x.long()), TypeError, "input"),
        ("C not divisible", dict(input=x[:, :17]), ValueError, "divisible"),
        ("empty map", dict(input=x[:, :, :0]), ValueError, "input"),
        ("boxes rank", dict(boxes=rois[0]), ValueError, "boxes"),
        ("boxes columns", dict(boxes=rois[:, :4]), ValueError, "boxes"),
        ("boxes list shape", dict(boxes=[rois[:, :3]]), ValueError, "boxes[0]"),
        ("boxes list empty", dict(boxes=[]), ValueError, "boxes"),
        ("boxes type", dict(boxes=rois.numpy()), TypeError, "boxes"),
        ("dtype mismatch", dict(boxes=rois.double()), TypeError, "dtype"),
        (
            "batch index high",
            dict(boxes=rois.index_fill(1, torch.tensor([0]), 2.0)),
            ValueError,
            "batch index",
        ),
        (
            "batch index negative",
            dict(boxes=rois.index_fill(1, torch.tensor([0]), -1.0)),
            ValueError,
            "batch index",
        ),
        (
            "nan box",
            dict(boxes=rois.index_fill(1, torch.tensor([3]), float("nan"))),
            ValueError,
            "finite",
        ),
        (
            "inf box",
            dict(boxes=rois.index_fill(1, torch.tensor([2]), float("inf"))),
            ValueError,
            "finite",
        ),
        (
            "nan batch index",
            dict(boxes=rois.index_fill(1, torch.tensor([0]), float("nan"))),
            ValueError,
            "batch index",
        ),
        ("output_size zero", dict(output_size=0), ValueError, "output_size"),
        ("output_size float", dict(output_size=3.0), TypeError, "output_size"),
        ("output_size triple", dict(output_size=(3, 3, 3)), ValueError, "output_size"),
        ("spatial_scale", dict(spatial_scale=float("nan")), ValueError, "spatial_scale"),
        ("spatial_scale negative", dict(spatial_scale=-1.0), ValueError, "spatial_scale"),
        ("sampling_ratio float", dict(sampling_ratio=2.0), TypeError, "sampling_ratio"),
        ("sampling_ratio", dict(sampling_ratio=-2), ValueError, "sampling_ratio"),
        ("sampling_ratio huge", dict(sampling_ratio=10**6), ValueError, "sampling_ratio"),
        (
            "align box too large",
            dict(boxes=torch.cat([rois[:, :1], rois[:, 1:] * 1e5], 1), sampling_ratio=-1),
            ValueError,
            "adaptive samples",
        ),
    ]


@pytest.mark.parametrize("op", ["pool", "align"])
@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
def test_bad_input_raises_named_error(op, case):
    _, override, exc, word = case
    if op == "pool" and "sampling_ratio" in override:
        pytest.skip("pool has no sampling_ratio")
    x, rois = _case()
    kwargs = dict(input=x, boxes=rois, output_size=3, spatial_scale=0.5)
    kwargs.update(override)
    fn = ps_roi_pool if op == "pool" else ps_roi_align
    with pytest.raises(exc, match=word.replace("[", r"\[").replace("]", r"\]")):
        fn(**kwargs)


def test_device_mismatch_is_a_value_error():
    x, rois = _case()
    with pytest.raises(ValueError, match="boxes are on meta"):
        ps_roi_pool(x, rois.to("meta"), 3, 0.5)


@pytest.mark.parametrize("op", ["pool", "align"])
def test_compile_under_autocast(op):
    fn, extra = OPS[op]
    x, rois = _case()
    w = torch.randn(18, 18, 1, 1)

    def f(t, r):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = torch.nn.functional.conv2d(t, w)
            return fn(y, r, 3, 0.5, *extra)

    out = torch.compile(f, fullgraph=True, backend="aot_eager")(x, rois)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, f(x, rois))
