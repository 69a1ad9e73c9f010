"""Tests of rfcn.ops.deform_ps_roi_pool: against the float64 reference, gradcheck (input and
offsets), registration (compile, export, opcheck), autocast, degenerate and bad input.

Every random case draws a fresh seed; the seed is in the failure message.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from rfcn.ops import DeformPSRoIPool, deform_ps_roi_pool
from rfcn.ops.reference import deform_ps_roi_pool_ref

SCALE = 0.5
KINDS = ("inside", "partial", "border", "tiny", "reversed", "huge")


def make_rois(n_img: int, h: int, w: int, k: int, gen: torch.Generator, kind: str = "mixed"):
    """float64 Tensor[K, 5] in image coordinates (map size / SCALE)."""
    ih, iw = h / SCALE, w / SCALE
    u = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    kinds = [KINDS[i % len(KINDS)] for i in range(k)] if kind == "mixed" else [kind] * k
    rows = []
    for i, kd in enumerate(kinds):
        a, b, c, d = u(4).tolist()
        if kd == "inside":
            x1, y1 = a * iw * 0.6, b * ih * 0.6
            box = (x1, y1, x1 + c * (iw - x1) * 0.8, y1 + d * (ih - y1) * 0.8)
        elif kd == "partial":
            x1, y1 = a * iw * 1.5 - iw * 0.5, b * ih * 1.5 - ih * 0.5
            box = (x1, y1, x1 + c * iw, y1 + d * ih)
        elif kd == "border":  # reaching or passing the bottom/right border
            box = (a * iw * 0.7, b * ih * 0.7, iw - 2 + c * 4, ih - 2 + d * 4)
        elif kd == "tiny":
            x1, y1 = a * iw * 0.8, b * ih * 0.8
            box = (x1, y1, x1 + c * 1.5, y1 + d * 1.5)
        elif kd == "reversed":
            x2, y2 = a * iw * 0.4, b * ih * 0.4
            box = (x2 + c * iw * 0.4, y2 + d * ih * 0.4, x2, y2)
        else:  # huge
            box = (-a * iw * 2, -b * ih * 2, iw + c * iw * 2, ih + d * ih * 2)
        rows.append([float(i % n_img), *box])
    return torch.tensor(rows, dtype=torch.float64)


def make_case(seed: int, n_cls: int | str, size=(2, 3, (2, 2), 5, 6), k=8, std=1.0):
    """(x float64[N, C, H, W], rois float64[K, 5], offsets float64[K, 2M, PH, PW], (PH, PW));
    ``n_cls`` = M, or "all" for M = C_out."""
    n_img, c_out, (ph, pw), h, w = size
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_img, c_out * ph * pw, h, w, generator=gen, dtype=torch.float64)
    rois = make_rois(n_img, h, w, k, gen)
    m = c_out if n_cls == "all" else n_cls
    offsets = torch.randn(k, 2 * m, ph, pw, generator=gen, dtype=torch.float64) * std
    return x, rois, offsets, (ph, pw)


@pytest.mark.parametrize("n_cls", ["all", 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_matches_reference(dtype, n_cls):
    seed = random.randrange(2**31)
    x, rois, off, bins = make_case(seed, n_cls, size=(2, 2, (2, 3), 5, 6), k=12)
    out = deform_ps_roi_pool(x.to(dtype), rois.to(dtype), off.to(dtype), bins, SCALE, 0.3, 3)
    # the reference sees the same (rounded) values
    x, rois, off = (t.to(dtype).double() for t in (x, rois, off))
    expected = deform_ps_roi_pool_ref(x, rois, off, bins, SCALE, 0.3, 3)
    assert out.dtype == dtype and out.shape == expected.shape == (12, 2, 2, 3)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol, msg=f"seed={seed}")


def test_no_offsets_equals_zero_offsets():
    seed = random.randrange(2**31)
    x, rois, off, bins = make_case(seed, 1, k=12)
    for dtype in (torch.float32, torch.float64):
        xd, rd = x.to(dtype), rois.to(dtype)
        zero = torch.zeros_like(off, dtype=dtype)
        none = deform_ps_roi_pool(xd, rd, None, bins, SCALE, 0.1, 2)
        assert torch.equal(none, deform_ps_roi_pool(xd, rd, zero, bins, SCALE, 0.1, 2))
    expected = deform_ps_roi_pool_ref(x, rois, None, bins, SCALE, 0.1, 2)
    torch.testing.assert_close(none, expected, rtol=1e-12, atol=1e-12, msg=f"seed={seed}")


@pytest.mark.parametrize("n_cls", ["all", 1])
def test_gradient_matches_reference(n_cls):
    seed = random.randrange(2**31)
    x, rois, off, bins = make_case(seed, n_cls, k=10, std=2.0)
    grads = []
    for fn in (deform_ps_roi_pool, deform_ps_roi_pool_ref):
        xr, orr = x.clone().requires_grad_(), off.clone().requires_grad_()
        out = fn(xr, rois, orr, bins, SCALE, 0.2, 2)
        out.backward(torch.ones_like(out) + torch.arange(out.numel()).reshape(out.shape) % 3)
        grads.append((xr.grad, orr.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-10, atol=1e-12, msg=f"{seed=}")
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-12, msg=f"{seed=}")


@pytest.mark.parametrize(
    "n_cls,std,trans_std",
    [("all", 1.0, 0.1), (1, 1.0, 0.1), ("all", 4.0, 0.5), (1, 4.0, 0.5)],
    ids=["per-class", "shared", "per-class-far", "shared-far"],
)
def test_gradcheck_input_and_offsets(n_cls, std, trans_std):
    """Border, huge and reversed boxes; large offsets push samples outside the map and into
    the clamped border zone."""
    seed = random.randrange(2**31)
    x, rois, off, bins = make_case(seed, n_cls, size=(2, 2, (2, 2), 4, 5), k=6, std=std)
    fn = lambda t, o: deform_ps_roi_pool(t, rois, o, bins, SCALE, trans_std, 2)  # noqa: E731
    xr, orr = x.requires_grad_(), off.requires_grad_()
    assert torch.autograd.gradcheck(fn, (xr, orr)), f"seed={seed}"


def test_gradcheck_without_offsets():
    seed = random.randrange(2**31)
    x, rois, _, bins = make_case(seed, 1, size=(2, 2, (2, 2), 4, 5), k=6)
    fn = lambda t: deform_ps_roi_pool(t, rois, None, bins, SCALE, 0.1, 3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x.requires_grad_(),)), f"seed={seed}"


def test_clamped_samples_have_no_offset_gradient():
    """A sample in the clamped zone [-0.5, 0) reads column 0 whatever its position."""
    x = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    rois = torch.tensor([[0, 0.0, 0.0, 3.0, 2.0]], dtype=torch.float64)  # start -0.5
    off = torch.tensor([[[[0.4]], [[2.0]]]], dtype=torch.float64, requires_grad=True)
    # x shift 0.4 * 0.1 * 4 = 0.16: x in [-0.34, 0) (clamped); y shift 2.0*0.1*3 = 0.6: free
    out = deform_ps_roi_pool(x, rois, off, 1, 1.0, 0.1, 1)
    out.backward()
    assert off.grad[0, 0].item() == 0.0 and off.grad[0, 1].item() != 0.0
    torch.testing.assert_close(out.reshape(()), x[0, 0, 0, 0] * 0.9 + x[0, 0, 1, 0] * 0.1)


def test_part_index_quirk_of_the_original():
    """For output sizes >= 22 the original's float part index floor(i / k * k) falls just below
    i for a few bins (dtype-dependent): such a bin reads the offsets of part i - 1."""
    from rfcn.kernels.deform_psroi_cpu import part_index

    assert list(part_index(7, np.zeros(1, np.float32))) == list(range(7))
    p32 = part_index(22, np.zeros(1, np.float32))
    p64 = part_index(23, np.zeros(1, np.float64))
    assert p32[13] == 12 and p64[13] == 12 and list(p64[14:]) == list(range(14, 23))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 23 * 23, 3, 3, generator=gen, dtype=torch.float64)
    rois = torch.tensor([[0, 0.0, 0.0, 5.0, 4.0]], dtype=torch.float64)
    off = torch.randn(1, 2, 23, 23, generator=gen, dtype=torch.float64)
    grads = []
    for fn in (deform_ps_roi_pool, deform_ps_roi_pool_ref):
        orr = off.clone().requires_grad_()
        out = fn(x, rois, orr, (23, 23), SCALE, 0.1, 1)
        out.backward(torch.ones_like(out))
        grads.append((out.detach(), orr.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-12)
    assert torch.all(grads[0][1][0, :, 13] == 0)  # part 13 of the rows is never read


def test_empty_rois_and_list_of_boxes():
    x, rois, off, bins = make_case(0, 1)
    xr, orr = x.clone().requires_grad_(), off[:0].clone().requires_grad_()
    empty = deform_ps_roi_pool(xr, rois[:0], orr, bins, SCALE)
    assert empty.shape == (0, 3, 2, 2)
    empty.sum().backward()
    assert torch.equal(xr.grad, torch.zeros_like(x)) and orr.grad.shape == (0, 2, 2, 2)
    order = torch.argsort(rois[:, 0], stable=True)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(x.shape[0])]
    torch.testing.assert_close(
        deform_ps_roi_pool(x, per_image, off[order], bins, SCALE),
        deform_ps_roi_pool(x, rois[order], off[order], bins, SCALE),
    )


def test_absurd_boxes_and_offsets_stay_finite():
    """Boxes whose geometry overflows float32 (NaN sample positions) and offsets that throw
    every sample off the map: finite output and gradients, no crash."""
    x = torch.randn(1, 8, 5, 6, requires_grad=True)
    rois = torch.tensor([[0, -3e38, -3e38, 3e38, 3e38], [0, 1.0, 1.0, 6.0, 5.0]])
    off = torch.tensor([1e30, -1e30]).repeat(2, 4, 2, 1).permute(0, 1, 3, 2).contiguous()
    off.requires_grad_()
    out = deform_ps_roi_pool(x, rois, off, 2, SCALE, 1.0, 2)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.isfinite(off.grad).all() and torch.equal(out[1], torch.zeros_like(out[1]))


def test_module():
    x, rois, off, bins = make_case(1, 1)
    mod = DeformPSRoIPool(bins, SCALE, trans_std=0.2, sample_per_part=3)
    assert torch.equal(mod(x, rois, off), deform_ps_roi_pool(x, rois, off, bins, SCALE, 0.2, 3))
    assert torch.equal(mod(x, rois), deform_ps_roi_pool(x, rois, None, bins, SCALE, 0.2, 3))
    assert "trans_std=0.2" in repr(mod) and "sample_per_part=3" in repr(mod)


def test_parallel_path_matches_serial(monkeypatch):
    from rfcn.ops import kernel_launch

    x, rois, off, bins = make_case(5, "all", size=(2, 5, (3, 3), 9, 11), k=30)
    g = torch.randn(30, 5, 3, 3, dtype=torch.float64)
    results = []
    for min_bins in (10**12, 0):
        monkeypatch.setattr(kernel_launch, "_PARALLEL_MIN_BINS", min_bins)
        xr, orr = x.clone().requires_grad_(), off.clone().requires_grad_()
        deform_ps_roi_pool(xr, rois, orr, bins, SCALE, 0.1, 2).backward(g)
        results.append((deform_ps_roi_pool(x, rois, off, bins, SCALE, 0.1, 2), xr.grad, orr.grad))
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1:], results[1][1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_double_backward_is_a_clear_error():
    x, rois, off, bins = make_case(2, 1)
    xr, orr = x.clone().requires_grad_(), off.clone().requires_grad_()
    out = deform_ps_roi_pool(xr, rois, orr, bins, SCALE)
    (gx,) = torch.autograd.grad(out.sum(), xr, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        gx.sum().backward()


# ---- registration ----------------------------------------------------------------------


def _small(dtype=torch.float32, n_cls=1):
    x, rois, off, _ = make_case(0, n_cls, size=(2, 2, (3, 3), 8, 10), k=6)
    return x.to(dtype), rois.to(dtype), off.to(dtype)


@pytest.mark.parametrize("with_offsets", [True, False])
def test_opcheck(with_offsets):
    x, rois, off = _small(torch.float64, "all")
    off = off.requires_grad_() if with_offsets else None
    args = (x.requires_grad_(), rois, off, 0.5, 0.1, 3, 3, 2)
    torch.library.opcheck(torch.ops.rfcn.deform_ps_roi_pool.default, args)
    g = torch.randn(rois.shape[0], 2, 3, 3, dtype=torch.float64)
    off_plain = None if off is None else off.detach()
    bwd_args = (g, with_offsets, x.detach(), rois, off_plain, 0.5, 0.1, 3, 3, 2)
    torch.library.opcheck(torch.ops.rfcn.deform_ps_roi_pool_backward.default, bwd_args)


def test_compile_fullgraph_no_graph_break():
    x, rois, off = _small()

    def f(t, r, o):
        return deform_ps_roi_pool(t.relu(), r, o * 2, (3, 3), 0.5, 0.1, 2).sum(dim=(2, 3))

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    grads = []
    for fn in (compiled, f):
        xr, orr = x.clone().requires_grad_(), off.clone().requires_grad_()
        out = fn(xr, rois, orr)
        out.sum().backward()
        grads.append((out, xr.grad, orr.grad))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_export_one_node():
    class M(torch.nn.Module):
        def forward(self, t, r, o):
            return deform_ps_roi_pool(t, r, o, 3, 0.5, 0.1, 2)

    x, rois, off = _small()
    ep = torch.export.export(M(), (x, rois, off))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets == [torch.ops.rfcn.deform_ps_roi_pool.default]
    torch.testing.assert_close(ep.module()(x, rois, off), M()(x, rois, off))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_and_autocast_compute_in_float32(dtype):
    x, rois, off = _small()
    xl = x.to(dtype)
    expected = deform_ps_roi_pool(xl.float(), rois, off, 3, 0.5, 0.1, 2).to(dtype)
    out = deform_ps_roi_pool(xl, rois.to(dtype), off.to(dtype), 3, 0.5, 0.1, 2)
    assert out.dtype == dtype
    # under CPU autocast, float32 boxes and offsets with a bf16/fp16 input are accepted
    xr, orr = xl.clone().requires_grad_(), off.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = deform_ps_roi_pool(xr, rois, orr, 3, 0.5, 0.1, 2)
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    out.float().sum().backward()
    assert xr.grad.dtype == dtype and orr.grad.dtype == torch.float32


def test_autocast_conv_output():
    x, rois, off = _small()
    w = torch.randn(18, 18, 1, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = torch.nn.functional.conv2d(x, w)
        out = deform_ps_roi_pool(y, rois, off, 3, 0.5)
        out32 = deform_ps_roi_pool(x, rois, off, 3, 0.5)
    assert y.dtype == out.dtype == torch.bfloat16 and out32.dtype == torch.float32
    assert torch.equal(out32, deform_ps_roi_pool(x, rois, off, 3, 0.5))


def _bad_inputs():
    x, rois, off = _small()
    nan_off = off.clone()
    nan_off[1, 0, 2, 2] = float("nan")
    inf_off = off.clone()
    inf_off[0, 1, 0, 0] = float("-inf")
    col = lambda j, v: rois.index_fill(1, torch.tensor([j]), v)  # noqa: E731
    return [
        ("input rank", dict(input=x[0]), ValueError, "input"),
        ("input type", dict(input=x.numpy()), TypeError, "input"),
        ("input int", dict(input=x.long()), TypeError, "input"),
        ("C not divisible", dict(input=x[:, :17]), ValueError, "divisible"),
        ("empty map", dict(input=x[:, :, :0]), ValueError, "input"),
        ("boxes rank", dict(rois=rois[0]), ValueError, "boxes"),
        ("boxes columns", dict(rois=rois[:, :4]), ValueError, "boxes"),
        ("boxes dtype", dict(rois=rois.double()), TypeError, "dtype"),
        ("batch index high", dict(rois=col(0, 2.0)), ValueError, "batch index"),
        ("batch index negative", dict(rois=col(0, -1.0)), ValueError, "batch index"),
        ("nan box", dict(rois=col(3, float("nan"))), ValueError, "finite"),
        ("inf box", dict(rois=col(2, float("inf"))), ValueError, "finite"),
        ("offsets type", dict(offsets=off.numpy()), TypeError, "offsets"),
        ("offsets rank", dict(offsets=off[0]), ValueError, "offsets"),
        ("offsets rows", dict(offsets=off[:-1]), ValueError, "offsets"),
        ("offsets bins", dict(offsets=off[:, :, :2]), ValueError, "offsets"),
        ("offsets odd", dict(offsets=off[:, :1]), ValueError, "offsets"),
        ("offsets zero classes", dict(offsets=off[:, :0]), ValueError, "offsets"),
        (
            "M not dividing C_out",
            dict(offsets=torch.zeros(6, 6, 3, 3)),
            ValueError,
            "M dividing",
        ),
        ("offsets dtype", dict(offsets=off.double()), TypeError, "offsets dtype"),
        ("offsets int", dict(offsets=off.long()), TypeError, "offsets"),
        ("offsets device", dict(offsets=off.to("meta")), ValueError, "offsets are on meta"),
        ("nan offset", dict(offsets=nan_off), ValueError, "offsets must be finite"),
        ("inf offset", dict(offsets=inf_off), ValueError, "offsets must be finite"),
        ("output_size zero", dict(output_size=0), ValueError, "output_size"),
        ("spatial_scale", dict(spatial_scale=float("nan")), ValueError, "spatial_scale"),
        ("trans_std nan", dict(trans_std=float("nan")), ValueError, "trans_std"),
        ("trans_std negative", dict(trans_std=-0.1), ValueError, "trans_std"),
        ("trans_std str", dict(trans_std="0.1"), TypeError, "trans_std"),
        ("sample_per_part zero", dict(sample_per_part=0), ValueError, "sample_per_part"),
        ("sample_per_part huge", dict(sample_per_part=10**6), ValueError, "sample_per_part"),
        ("sample_per_part float", dict(sample_per_part=2.0), TypeError, "sample_per_part"),
    ]


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
def test_bad_input_raises_named_error(case):
    _, override, exc, word = case
    x, rois, off = _small()
    kwargs = dict(input=x, rois=rois, offsets=off, output_size=3, spatial_scale=0.5)
    kwargs.update(override)
    with pytest.raises(exc, match=word):
        deform_ps_roi_pool(**kwargs)
