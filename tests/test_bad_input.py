"""Unusual conv / pool / resize / attention configurations: each is either compiled and matched to a float64
PyTorch reference, or refused at build time with an error naming the node (never wrong at run time)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICE, assert_close_rel
from torch import nn

import trtjit
from trtjit.errors import BuildError, TrtjitError, UnsupportedOpError
from trtjit.ir import Value


class Fn(nn.Module):
    """``fn(*inputs, *params)`` as a module (params become weights)."""

    def __init__(self, fn, *params: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        self.params = nn.ParameterList([nn.Parameter(p) for p in params])

    def forward(self, *xs):
        return self.fn(*xs, *self.params)


def matches(model: nn.Module, *inputs: torch.Tensor) -> trtjit.Engine:
    model = model.eval()
    engine = trtjit.compile(model.to(DEVICE), tuple(t.to(DEVICE) for t in inputs), verify=True)
    with torch.no_grad():
        ref = model.double().cpu()(*(t.double().cpu() if t.is_floating_point() else t.cpu() for t in inputs))
    assert ref.abs().max() > 0 and torch.isfinite(ref).all()
    assert_close_rel(engine(*(t.to(DEVICE) for t in inputs)).double().cpu(), ref, tol=1e-4)
    return engine


def templates(engine: trtjit.Engine) -> list[str]:
    return [k.template for k in engine.kernels]


# ------------------------------------------------------------------------------------------------- conv
CONVS = {
    "same_odd": (dict(padding="same"), (4, 3, 3, 3)),
    "same_even_kernel": (dict(padding="same"), (4, 3, 2, 2)),
    "same_2x3_kernel": (dict(padding="same"), (4, 3, 2, 3)),
    "same_dilated_even": (dict(padding="same", dilation=(1, 3)), (4, 3, 2, 2)),
    "valid": (dict(padding="valid"), (4, 3, 3, 3)),
    "stride3_dilation_asym_pads": (dict(stride=3, padding=(1, 2), dilation=(2, 1)), (4, 3, 3, 3)),
    "grouped_strided": (dict(stride=(2, 1), padding=1, groups=3), (6, 1, 3, 3)),
    "depthwise_multiplier_dilated": (dict(padding=2, dilation=2, groups=3), (6, 1, 3, 3)),
    "kernel_larger_than_input": (dict(padding=(5, 2)), (4, 3, 11, 13)),
    "stride_larger_than_kernel": (dict(stride=4), (4, 3, 2, 2)),
    "one_row_kernel": (dict(padding=(0, 1)), (4, 3, 1, 3)),
}


@pytest.mark.parametrize("name", list(CONVS))
def test_conv_configurations(name, gen):
    kw, wshape = CONVS[name]
    model = Fn(lambda x, w, kw=kw: F.conv2d(x, w, **kw), torch.randn(wshape, generator=gen))
    engine = matches(model, torch.randn(2, 3, 9, 11, generator=gen))
    assert "conv" in templates(engine)
    if name == "same_even_kernel":  # the odd element of the padding is one explicit pad at the end, as ATen
        assert "pad" in templates(engine)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv_padding_modes(mode, gen):
    model = nn.Conv2d(3, 4, 5, padding=2, padding_mode=mode)
    engine = matches(model, torch.randn(2, 3, 7, 8, generator=gen))
    # a 3-channel input over K = 75: the conv reads an NHWC copy of it (passes/stem_input_nhwc)
    assert templates(engine) == (["pointwise", "conv"] if mode == "zeros" else ["pad", "pointwise", "conv"])


CONV_T = {
    "output_padding": dict(stride=2, padding=1, output_padding=1),
    "dilation": dict(dilation=2),
    "stride_dilation_output_padding": dict(stride=2, dilation=2, output_padding=1),
    "anisotropic": dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2)),
    "groups_all": dict(stride=3, padding=2, output_padding=2, groups=2, dilation=2),
}


@pytest.mark.parametrize("name", list(CONV_T))
def test_conv_transpose_configurations(name, gen):
    kw = CONV_T[name]
    groups = kw.get("groups", 1)
    w = torch.randn(4, 6 // groups, 3, 2, generator=gen)
    model = Fn(lambda x, w, kw=kw: F.conv_transpose2d(x, w, **kw), w)
    engine = matches(model, torch.randn(2, 4, 5, 4, generator=gen))
    assert templates(engine) == ["conv"]


def test_conv_float64_is_refused_naming_the_node(gen):
    model = Fn(lambda x, w: F.conv2d(x, w), torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=gen))
    with pytest.raises(BuildError, match=r"node 'conv2d'.*float64"):
        trtjit.compile(model, (torch.randn(1, 2, 5, 5, dtype=torch.float64, generator=gen),))


@pytest.mark.parametrize("fn,op", [
    (lambda x: F.conv3d(x, torch.ones(2, 2, 3, 3, 3)), "conv3d"),
    (lambda x: F.conv1d(x.flatten(3), torch.ones(2, 2, 3)), "conv1d"),
])
def test_other_conv_ranks_are_refused(fn, op, gen):
    with pytest.raises(TrtjitError, match=op):
        trtjit.compile(Fn(fn), (torch.randn(1, 2, 4, 4, 4, generator=gen),))


# ---------------------------------------------------------------------------------------------- pooling
POOLS = {
    "max_ceil": lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True),
    "max_ceil_pad_dilation": lambda x: F.max_pool2d(x, 3, 2, 1, dilation=2, ceil_mode=True),
    "max_anisotropic": lambda x: F.max_pool2d(x, (2, 3), (1, 2), (1, 0)),
    "avg_ceil": lambda x: F.avg_pool2d(x, 3, 2, ceil_mode=True),
    "avg_ceil_pad": lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True),
    "avg_ceil_pad_exclude": lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
    "avg_divisor_override": lambda x: F.avg_pool2d(x, 3, 2, 1, divisor_override=5),
    "adaptive_uneven": lambda x: F.adaptive_avg_pool2d(x, (4, 3)),
    "adaptive_global": lambda x: F.adaptive_avg_pool2d(x, 1),
}


@pytest.mark.parametrize("name", list(POOLS))
def test_pool_configurations(name, gen):
    engine = matches(Fn(POOLS[name]), torch.randn(2, 3, 9, 11, generator=gen))
    assert templates(engine) == ["reduction" if name == "adaptive_global" else "pool"]


def test_pool_indices_and_other_pools_are_refused(gen):
    x = torch.randn(1, 2, 6, 6, generator=gen)
    with pytest.raises(UnsupportedOpError, match=r"max_pool2d_with_indices \(the indices output\)"):
        trtjit.compile(Fn(lambda x: F.max_pool2d(x, 2, return_indices=True)[1].float()), (x,))
    with pytest.raises(UnsupportedOpError, match="adaptive_max_pool2d"):
        trtjit.compile(Fn(lambda x: F.adaptive_max_pool2d(x, 4)), (x,))
    with pytest.raises(UnsupportedOpError, match="avg_pool3d"):
        trtjit.compile(Fn(lambda x: F.avg_pool3d(x, 2)), (x.reshape(1, 2, 4, 3, 3),))


# ----------------------------------------------------------------------------------------------- resize
RESIZES = [(mode, ac, kw) for mode, ac in (("nearest", None), ("bilinear", False), ("bilinear", True))
           for kw in (dict(scale_factor=2), dict(scale_factor=1.7), dict(size=(5, 17)), dict(scale_factor=(0.5, 1.3)))]


@pytest.mark.parametrize("mode,align_corners,kw", RESIZES, ids=[f"{m}-{a}-{list(k.values())[0]}" for m, a, k in RESIZES])
def test_resize_configurations(mode, align_corners, kw, gen):
    fn = Fn(lambda x: F.interpolate(x, mode=mode, align_corners=align_corners, **kw))
    assert templates(matches(fn, torch.randn(2, 3, 9, 11, generator=gen))) == ["resize"]


def test_resize_recompute_scale_factor_and_area(gen):
    x = torch.randn(2, 3, 9, 11, generator=gen)
    matches(Fn(lambda x: F.interpolate(x, scale_factor=1.7, mode="bilinear", recompute_scale_factor=True)), x)
    matches(Fn(lambda x: F.interpolate(x, size=(4, 5), mode="area")), x)


@pytest.mark.parametrize("fn,op", [
    (lambda x: F.interpolate(x, scale_factor=2, mode="nearest-exact"), "_upsample_nearest_exact2d"),
    (lambda x: F.interpolate(x, scale_factor=2, mode="bicubic"), "upsample_bicubic2d"),
    (lambda x: F.interpolate(x, size=(4, 5), mode="bilinear", antialias=True), "_upsample_bilinear2d_aa"),
    (lambda x: F.interpolate(x.flatten(2), scale_factor=2, mode="linear"), "upsample_linear1d"),
])
def test_unsupported_resize_modes_are_refused_with_where(fn, op, gen):
    with pytest.raises(UnsupportedOpError, match=rf"aten\.{op}: at "):
        trtjit.compile(Fn(fn), (torch.randn(1, 2, 6, 6, generator=gen),))


# -------------------------------------------------------------------------------------------- attention
def _qkv(gen, L=5, S=7, heads=4, kv_heads=4, D=8, Dv=6, batch=2):
    return (torch.randn(batch, heads, L, D, generator=gen), torch.randn(batch, kv_heads, S, D, generator=gen),
            torch.randn(batch, kv_heads, S, Dv, generator=gen))


SDPA = {
    "scale": (dict(scale=0.3), {}),
    "causal_L_lt_S": (dict(is_causal=True), {}),
    "causal_L_gt_S": (dict(is_causal=True), dict(L=7, S=5)),
    "gqa": (dict(enable_gqa=True), dict(kv_heads=2)),
    "head_dim_80": ({}, dict(D=80, Dv=80)),
}


@pytest.mark.parametrize("name", list(SDPA))
def test_sdpa_configurations(name, gen):
    kw, shape = SDPA[name]
    engine = matches(Fn(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kw)), *_qkv(gen, **shape))
    assert templates(engine) == ["attention"]


@pytest.mark.parametrize("shape", [(1, 1), (5, 1), (1, 7), (5, 7), (2, 1, 1, 1), (4, 1, 1), (2, 4, 5, 7)], ids=str)
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_masks_of_every_broadcast_shape(shape, kind, gen):
    """A mask broadcast along L or S used to give the kernel a pointer of the wrong rank (a run-time error);
    rows whose keys are all masked give 0, as torch's sdpa."""
    keep = torch.rand(shape, generator=gen) > 0.3
    keep[..., 0] = True
    if len(shape) >= 2 and shape[-2] > 1:
        keep[..., 1, :] = False  # one query row sees no key at all
    mask = keep if kind == "bool" else torch.randn(shape, generator=gen).masked_fill(~keep, float("-inf"))
    engine = matches(Fn(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m)), *_qkv(gen), mask)
    assert templates(engine) == ["attention"]


def test_sdpa_dropout_is_refused_naming_the_node(gen):
    with pytest.raises(BuildError, match=r"node 'scaled_dot_product_attention'.*dropout_p"):
        trtjit.compile(Fn(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=0.1)), _qkv(gen))


EAGER = {
    "scalar_shift": lambda q, k, v, keep: torch.softmax(q @ k.transpose(-1, -2) * 0.3 + 1.5, dim=-1) @ v,
    "fill_finfo_min": lambda q, k, v, keep: torch.softmax(
        (q @ k.transpose(-1, -2) * 0.3).masked_fill(~keep, torch.finfo(torch.float32).min), dim=-1) @ v,
    "fill_minus_1e4": lambda q, k, v, keep: torch.softmax(
        (q @ k.transpose(-1, -2) / 3.0).masked_fill(~keep, -1e4), dim=-1) @ v,
    "where_keep": lambda q, k, v, keep: torch.softmax(
        torch.where(keep, q @ k.transpose(-1, -2), -1e9), dim=-1) @ v,
}


@pytest.mark.parametrize("name", list(EAGER))
def test_eager_attention_fill_values(name, gen):
    """The eager pattern keeps its fill value: a row whose keys are all masked gets softmax's uniform
    weights, exactly as eager PyTorch computes them."""
    keep = torch.rand(5, 7, generator=gen) > 0.3
    keep[2] = False
    engine = matches(Fn(EAGER[name]), *_qkv(gen), keep)
    assert templates(engine) == ["attention"]
    fills = [n.attrs["mask_fill"] for n in engine.graph if n.op == "sdpa"]
    if name == "scalar_shift":
        assert fills == [None]  # an additive shift, not a fill
    else:
        assert len(fills) == 1 and fills[0] is not None and fills[0] <= -1e4


def test_eager_attention_minus_inf_fill(gen):
    keep = torch.rand(5, 7, generator=gen) > 0.2
    keep[:, 0] = True  # no fully masked row: eager softmax would give NaN there (trtjit gives 0, as sdpa)
    fn = Fn(lambda q, k, v, keep: torch.softmax((q @ k.transpose(-1, -2)).masked_fill(~keep, float("-inf")), -1) @ v)
    assert templates(matches(fn, *_qkv(gen), keep)) == ["attention"]


# ------------------------------------------------------------------------------- non-contiguous inputs
def test_non_contiguous_engine_inputs(gen):
    """Engines are built for shapes, not strides: transposed, channels-last, offset and expanded inputs are
    read correctly."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval()
    x = torch.randn(2, 3, 6, 5, generator=gen)
    engine = trtjit.compile(model.to(DEVICE), (x.to(DEVICE),))
    ref = copy.deepcopy(model).double().cpu()
    variants = {
        "transposed": torch.randn(2, 3, 5, 6, generator=gen).transpose(2, 3),
        "channels_last": x.to(memory_format=torch.channels_last) + 1.0,
        "offset": torch.randn(3, 3, 6, 5, generator=gen)[1:],
        "expanded": torch.randn(1, 3, 6, 5, generator=gen).expand(2, 3, 6, 5),
    }
    for name, t in variants.items():
        assert not t.is_contiguous() or name == "offset", name
        assert_close_rel(engine(t.to(DEVICE)).double().cpu(), ref(t.double()), tol=1e-4)


# ---------------------------------------------------------------------------------------- unbatched
UNBATCHED = {
    "conv2d": (lambda x, w: F.conv2d(x, w, padding=1), (4, 3, 3, 3)),
    "conv_transpose2d": (lambda x, w: F.conv_transpose2d(x, w, stride=2), (3, 4, 3, 3)),
    "max_pool2d": (lambda x: F.max_pool2d(x, 2), None),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 3, 2, 1), None),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, (4, 3)), None),
    "interpolate": (lambda x: F.interpolate(x.unsqueeze(0), scale_factor=2, mode="bilinear")[0], None),
}


@pytest.mark.parametrize("name", list(UNBATCHED))
def test_unbatched_inputs(name, gen):
    """torch takes [C, H, W] for these too (a template used to fail on the missing batch dim)."""
    fn, wshape = UNBATCHED[name]
    model = Fn(fn, *([torch.randn(wshape, generator=gen)] if wshape else []))
    matches(model, torch.randn(3, 9, 11, generator=gen))


def test_unbatched_attention(gen):
    q, k, v = (torch.randn(5, 8, generator=gen) for _ in range(3))
    engine = matches(Fn(lambda q, k, v: F.scaled_dot_product_attention(q, k, v)), q, k, v)
    assert "attention" in templates(engine)


# --------------------------------------------------------------------------------------- integer tensors
INTEGER = {
    "max_pool2d": lambda x: F.max_pool2d(x, 3, 2, 1),
    "nearest": lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
    "sum": lambda x: x.sum(-1),
    "amax": lambda x: x.amax((2, 3)),
    "amin": lambda x: x.amin(1),
}


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8], ids=str)
@pytest.mark.parametrize("name", list(INTEGER))
def test_integer_tensors_stay_exact(name, dtype, gen):
    """Integers beyond 2**24 used to be rounded through fp32 in these templates."""
    info = torch.iinfo(dtype)
    lo, hi = (2**40, 2**41) if dtype == torch.int64 else (info.min, info.max)
    x = torch.randint(lo, hi, (2, 3, 5, 6), generator=gen, dtype=dtype)
    if name == "sum" and dtype != torch.int64:
        x = x // 8  # torch sums int32 / uint8 into int64: keep the reference free of its own overflow
    engine = trtjit.compile(Fn(INTEGER[name]), (x.to(DEVICE),), verify=True)
    ref = INTEGER[name](x) if name != "nearest" else x.repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert torch.equal(engine(x.to(DEVICE)).cpu(), ref)


@pytest.mark.parametrize("fn,op", [(lambda x: F.avg_pool2d(x, 2), "avg_pool2d"),
                                   (lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"), "resize_bilinear")])
def test_integer_averaging_is_refused_naming_the_node(fn, op, gen):
    x = torch.randint(0, 9, (1, 2, 4, 4), generator=gen)
    with pytest.raises(TrtjitError, match=rf"node '[^']*'.*{op} of torch.int64"):
        trtjit.compile(Fn(fn), (x,))


def test_large_pooling_windows_loop_instead_of_unrolling(gen):
    """A 16x16 window (or adaptive pooling 61 -> 3) is a loop in the kernel, not hundreds of unrolled loads."""
    x = torch.randn(1, 2, 32, 61, generator=gen)
    for fn in (lambda x: F.avg_pool2d(x, 16), lambda x: F.max_pool2d(x, (16, 20), 8),
               lambda x: F.adaptive_avg_pool2d(x, (3, 5))):
        engine = matches(Fn(fn), x)
        (k,) = engine.kernels
        assert "for kh in range(" in k.source and "static_range" not in k.source


def test_pool_and_resize_templates_refuse_other_ranks():
    """A graph built by hand (or another frontend) with a 3-D pooling input is refused at build time."""
    g = trtjit.Graph()
    x = g.add_input("x", trtjit.TensorSpec((3, 8, 8), torch.float32))
    g.outputs = [Value(g.add("max_pool2d", [x], {"kernel": [2, 2], "stride": [2, 2]}, name="pool").name)]
    with pytest.raises(BuildError, match=r"node 'pool': max_pool2d needs NCHW \(4-D\) tensors, got \[3, 8, 8\]"):
        trtjit.build(g)


def test_mask_combinators_and_new_constants(gen):
    """``a & b`` of boolean masks is logical (Mistral's sliding window), of integers bitwise; ``new_ones``
    and friends are constants of the argument's dtype."""
    a, b = torch.rand(4, 5, generator=gen) > 0.5, torch.rand(4, 5, generator=gen) > 0.5
    i, j = torch.randint(0, 64, (4, 5), generator=gen), torch.randint(0, 64, (4, 5), generator=gen)
    fn = Fn(lambda a, b, i, j: ((a & b) | ~a, (i & j) | 3, i.new_ones(4, 5) + i.new_zeros(5) + i.new_full((4, 1), 7)))
    engine = trtjit.compile(fn, tuple(t.to(DEVICE) for t in (a, b, i, j)), verify=True)
    for got, want in zip(engine(*(t.to(DEVICE) for t in (a, b, i, j))), fn(a, b, i, j)):
        assert got.dtype == want.dtype and torch.equal(got.cpu(), want)


def test_integer_indexing_and_repeat_interleave(gen):
    x = torch.randn(6, 4, 5, generator=gen)
    idx, cols = torch.tensor([[0, 5, 2], [1, 1, 3]]), torch.tensor([3, 0, 1, 3])
    fn = Fn(lambda x, i, j: (x[i], x[:, j], x.repeat_interleave(2, dim=1)))
    engine = trtjit.compile(fn, tuple(t.to(DEVICE) for t in (x, idx, cols)), verify=True)
    for got, want in zip(engine(*(t.to(DEVICE) for t in (x, idx, cols))), fn(x, idx, cols)):
        assert_close_rel(got.cpu(), want)
    with pytest.raises(BuildError, match=r"node '[^']*'.*(boolean mask|depends on the input values)"):
        trtjit.compile(Fn(lambda x, m: x[m]), (x, torch.rand(6, generator=gen) > 0.5))
