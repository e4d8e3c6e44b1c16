"""Each fusion family of the architecture issue fires as the stated number of kernels on small blocks.

Every test compiles a block with ``verify=True``, counts the generated kernels (and what each covers),
checks the named rule in ``engine.build_log`` and matches a float64 PyTorch reference within 1e-4.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICE, assert_close_rel
from test_passes import body_ops, check_pass, fired, inp, op, rule_name, skipped
from torch import nn

import trtjit
from trtjit.ir import Graph


def compile_checked(model: nn.Module, *inputs: torch.Tensor) -> trtjit.Engine:
    model = model.eval()
    engine = trtjit.compile(model.to(DEVICE), tuple(t.to(DEVICE) for t in inputs), verify=True)
    with torch.no_grad():
        ref = copy.deepcopy(model).double().cpu()(*(t.double().cpu() for t in inputs))
    out = engine(*(t.to(DEVICE) for t in inputs))
    for o, r in zip(out if isinstance(out, tuple) else (out,), ref if isinstance(ref, tuple) else (ref,)):
        assert r.abs().max() > 0
        assert_close_rel(o.double().cpu(), r, tol=1e-4)
    return engine


def kernels(engine: trtjit.Engine) -> list[tuple[str, list[str]]]:
    """(template, ops covered) per kernel, in launch order."""
    return [(k.template, [engine._op_of(k, c) for c in k.covers]) for k in engine.kernels]


def events(engine: trtjit.Engine, rule: str, fired_: bool = True) -> list[dict]:
    return [e for r in engine.build_log for e in r.events if e["rule"] == rule and e["fired"] == fired_]


def randomize_bn(model: nn.Module, gen: torch.Generator) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model


CONV_RULE = rule_name("fuse_gemm_epilogue", "CONV")
GEMM_RULE = rule_name("fuse_gemm_epilogue", "GEMM")
BN_RULE = rule_name("fold_batchnorm", "CONV_BN")


# ------------------------------------------------------------------------- conv + BN + act + residual
class ConvBnActResidual(nn.Module):
    def __init__(self, act: nn.Module, c: int = 6) -> None:
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), act

    def forward(self, x):
        return self.act(self.bn(self.conv(x)) + x)


@pytest.mark.parametrize("act", [nn.ReLU(), nn.ReLU6(), nn.SiLU(), nn.Hardswish(), nn.GELU()], ids=str)
def test_conv_bn_act_residual_is_one_kernel(act, gen):
    model = randomize_bn(ConvBnActResidual(act), gen)
    engine = compile_checked(model, torch.randn(2, 6, 7, 7, generator=gen))
    (template, ops), = kernels(engine)
    assert template == "conv" and ops[0] == "conv2d" and "batch_norm" not in ops
    assert events(engine, BN_RULE)  # the BN became the conv's weights and a bias add
    (ev,) = events(engine, CONV_RULE)
    assert "bias" in ev["detail"] and "residual add" in ev["detail"]


def test_conv_bn_act_residual_after_the_activation_too(gen):
    """ResNet's order: relu(bn(conv(x)) + identity) above, and an activation before the add here."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)

        def forward(self, x, skip):
            return torch.relu(self.bn(self.conv(x))) + skip

    engine = compile_checked(randomize_bn(Block(), gen), torch.randn(2, 4, 6, 6, generator=gen),
                             torch.randn(2, 4, 6, 6, generator=gen))
    assert [t for t, _ in kernels(engine)] == ["conv"]
    assert events(engine, CONV_RULE)[0]["detail"] == "conv2d + bias + relu + residual add"


# ------------------------------------------------------------------------------ depthwise conv + act
@pytest.mark.parametrize("act", [nn.ReLU6(), nn.Hardswish(), nn.SiLU()], ids=str)
@pytest.mark.parametrize("k", [3, 7])
def test_depthwise_conv_act_is_one_kernel(act, k, gen):
    c = 8
    model = randomize_bn(nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False),
                                       nn.BatchNorm2d(c), act), gen)
    engine = compile_checked(model, torch.randn(2, c, 9, 9, generator=gen))
    (template, ops), = kernels(engine)
    assert template == "conv" and ops[0] == "conv2d" and ops[-1] != "add"
    conv = next(b for n in engine.graph if n.op == "fused_gemm" for b in n.attrs["body"] if b.op == "conv2d")
    assert conv.attrs["groups"] == c
    assert events(engine, CONV_RULE)[0]["detail"].startswith("depthwise conv2d + bias + ")


# --------------------------------------------------------------------------------- linear + activation
@pytest.mark.parametrize("act", [nn.GELU(), nn.GELU(approximate="tanh"), nn.SiLU(), nn.Tanh()], ids=str)
def test_linear_act_is_one_kernel(act, gen):
    model = nn.Sequential(nn.Linear(12, 20), act)
    engine = compile_checked(model, torch.randn(2, 5, 12, generator=gen))
    (template, ops), = kernels(engine)
    assert template == "gemm" and ops[:2] == ["matmul", "add"] and len(ops) == 3
    assert events(engine, GEMM_RULE)[0]["detail"].startswith("matmul + bias + ")


class _Act(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "sigmoid", "silu", "tanh"])
def test_activation_helpers_are_accurate_over_a_wide_range(name, dtype):
    """GELU (erf) and sigmoid lower to Triton helpers (ops.TL_HELPERS: an Abramowitz-Stegun erfc, exp2):
    over [-12, 12] they stay within fp32 rounding of float64 torch (the A&S erfc errs by < 1.5e-7), and a
    float64 model keeps float64 accuracy (its helpers take the libdevice path)."""
    fn = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "sigmoid": torch.sigmoid,
          "silu": F.silu, "tanh": torch.tanh}[name]
    x = torch.linspace(-12, 12, 4001, dtype=torch.float64)
    engine = trtjit.compile(_Act(fn).to(DEVICE), (x.to(dtype).to(DEVICE),))
    err = (engine(x.to(dtype).to(DEVICE)).double().cpu() - fn(x)).abs().max().item()
    assert err < (2e-6 if dtype == torch.float32 else 1e-12), err


def test_kernel_source_carries_the_helpers_it_calls(gen):
    """A kernel's source is self-contained: it defines the helpers its expressions call, and no others."""
    x = torch.randn(4, 8, generator=gen)
    gelu = trtjit.compile(_Act(F.gelu).to(DEVICE), (x.to(DEVICE),)).kernels[0].source
    relu = trtjit.compile(_Act(torch.relu).to(DEVICE), (x.to(DEVICE),)).kernels[0].source
    assert "def _gelu_erf(x):" in gelu and "_gelu_erf(" in gelu.split("def _gelu_erf", 1)[1].split("\n", 1)[1]
    assert "def _sigmoid" not in gelu
    assert "def _" not in relu


# ---------------------------------------------------------------------------------------------- SwiGLU
class SwiGLU(nn.Module):
    """LlamaMLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, d: int = 16, hidden: int = 40) -> None:
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def _check_swiglu(engine: trtjit.Engine) -> None:
    ks = kernels(engine)
    assert [t for t, _ in ks] == ["gemm", "gemm", "gemm"]  # no pointwise kernel: the gate is an epilogue
    gated = [ops for _, ops in ks if "silu" in ops]
    assert gated == [["matmul", "silu", "mul"]]
    assert events(engine, rule_name("merge_parallel_gemms", "GATED"))
    assert any("gated product" in e["detail"] for e in events(engine, GEMM_RULE))


def test_swiglu_elementwise_part_runs_in_a_gemm_epilogue(gen):
    _check_swiglu(compile_checked(SwiGLU(), torch.randn(2, 6, 16, generator=gen)))


def test_swiglu_of_transformers_llama_mlp(gen):
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    cfg = pytest.importorskip("transformers").LlamaConfig(hidden_size=16, intermediate_size=40,
                                                                  num_attention_heads=4)
    torch.manual_seed(0)
    _check_swiglu(compile_checked(llama.LlamaMLP(cfg), torch.randn(2, 6, 16, generator=gen)))


def test_merge_parallel_gemms_keeps_gated_pairs_apart(gen):
    MERGE, GATED = rule_name("merge_parallel_gemms", "MERGE"), rule_name("merge_parallel_gemms", "GATED")
    g = Graph()
    x = inp(g, "x", 2, 5, 8)
    mms = {n: op(g, "matmul", [x, g.add_constant(f"{n}.w", torch.randn(8, 6, generator=gen))], n)
           for n in ("gate", "up", "other1", "other2")}
    h = op(g, "mul", [op(g, "silu", [mms["gate"]], "act"), mms["up"]], "h")
    g.outputs = [h, mms["other1"], mms["other2"]]
    g, rec = check_pass("merge_parallel_gemms", g, gen)
    assert g.node("gate").op == "matmul" and g.node("up").op == "matmul"  # kept apart
    assert fired(rec, MERGE) == ["other1"]  # the ungated pair still merges
    assert fired(rec, GATED) == ["gate"]
    assert "gated pair with 'up'" in skipped(rec, MERGE)["gate"][0]


# --------------------------------------------------------------------------------------------- RoPE
def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class Rope(nn.Module):
    """HF Llama's apply_rotary_pos_emb on a projected, head-split query."""

    def __init__(self, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.q_proj, self.heads = nn.Linear(d, d, bias=False), heads

    def forward(self, x, cos, sin):
        b, s, d = x.shape
        q = self.q_proj(x).view(b, s, self.heads, d // self.heads).transpose(1, 2)
        return q * cos.unsqueeze(1) + rotate_half(q) * sin.unsqueeze(1)


CAT_RULE = rule_name("fuse_pointwise", "CAT")


def _rope_inputs(gen, b=2, s=5, dh=8):
    ang = torch.rand(b, s, dh // 2, generator=gen) * 6
    emb = torch.cat([ang, ang], dim=-1)
    return emb.cos(), emb.sin()


def test_rope_is_one_kernel(gen):
    cos, sin = _rope_inputs(gen)
    engine = compile_checked(Rope(), torch.randn(2, 5, 32, generator=gen), cos, sin)
    ks = kernels(engine)
    assert [t for t, _ in ks] == ["gemm", "pointwise"]  # the projection, then RoPE: no concat kernel
    assert sorted(ks[1][1]) == sorted(["mul", "neg", "cat", "mul", "add"])
    assert events(engine, CAT_RULE)


def test_rope_of_transformers_llama(gen):
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")

    class Apply(nn.Module):
        def forward(self, q, k, cos, sin):
            return llama.apply_rotary_pos_emb(q, k, cos, sin)

    cos, sin = _rope_inputs(gen)
    q, k = torch.randn(2, 4, 5, 8, generator=gen), torch.randn(2, 2, 5, 8, generator=gen)
    engine = compile_checked(Apply(), q, k, cos, sin)
    assert [t for t, _ in kernels(engine)] == ["pointwise", "pointwise"]  # one per rotated tensor
    assert all("cat" in ops for _, ops in kernels(engine))


def test_partial_rotary_is_one_kernel(gen):
    """GPT-NeoX / Phi: RoPE on the first dims, the rest passed through: a cat of a cat, one kernel."""

    class Partial(nn.Module):
        def forward(self, q, cos, sin):
            rot, rest = q[..., :4], q[..., 4:]
            return torch.cat([rot * cos + rotate_half(rot) * sin, rest], dim=-1)

    cos, sin = _rope_inputs(gen, dh=4)
    engine = compile_checked(Partial(), torch.randn(2, 5, 10, generator=gen), cos, sin)
    ((template, ops),) = kernels(engine)
    assert template == "pointwise" and ops.count("cat") == 2


def test_fuse_pointwise_cat_cone(gen):
    """The cat's exclusive pointwise producers run per input at the shifted index; a producer also used
    elsewhere is read from memory; a cat with no pointwise neighbour stays a concat kernel."""
    CHAIN = rule_name("fuse_pointwise", "CHAIN")
    g = Graph()
    x = inp(g, "x", 3, 4, 6)
    y = inp(g, "y", 3, 2, 6)
    scale = inp(g, "scale", 6)
    lo = op(g, "slice", [x], "lo", dim=1, start=0, end=2)
    hi = op(g, "slice", [x], "hi", dim=1, start=2, end=4)
    neg = op(g, "neg", [op(g, "exp", [hi], "exp")], "neg")  # a two-op cone
    shared = op(g, "sigmoid", [y], "shared")  # also a graph output: loaded, not recomputed
    cat = op(g, "cat", [neg, lo, shared], "cat", dim=1)
    plain = op(g, "cat", [x, y], "plain", dim=1)  # no pointwise neighbour
    g.outputs = [op(g, "mul", [cat, scale], "out"), shared, plain]
    g, rec = check_pass("fuse_pointwise", g, gen)
    assert body_ops(g, "out") == ["exp", "neg", "cat", "mul"]
    assert set(g.node("out").attrs["rules"]) == {CHAIN, CAT_RULE}
    assert g.node("shared").op == "fused_pointwise" and g.node("plain").op == "cat"
    assert fired(rec, CAT_RULE) == ["out"] and "2 op(s) computed per input" in rec.fired[0]["detail"]
    assert skipped(rec, CAT_RULE)["plain"] == ["no pointwise producer or consumer: stays a concat kernel"]
    engine = trtjit.build(g, trtjit.BuildOptions(verify=True))
    xs = [torch.randn(3, 4, 6, generator=gen), torch.randn(3, 2, 6, generator=gen), torch.randn(6, generator=gen)]
    want = trtjit.run_graph(g, xs)
    for got, ref in zip(engine.run(*(t.to(DEVICE) for t in xs)), want):
        assert_close_rel(got.cpu(), ref)


def test_cat_fusion_with_broadcast_and_int_inputs(gen):
    """ViT's class token: cat(expand(cls), tokens) + pos is one kernel; integer cats work too."""

    class Tok(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls = nn.Parameter(torch.randn(1, 1, 8))
            self.pos = nn.Parameter(torch.randn(1, 5, 8))

        def forward(self, t):
            return torch.cat([self.cls.expand(t.shape[0], -1, -1), t * 2.0], dim=1) + self.pos

    engine = compile_checked(Tok(), torch.randn(3, 4, 8, generator=gen))
    assert kernels(engine) == [("pointwise", ["mul", "cat", "add"])]

    class IntCat(nn.Module):
        def forward(self, a, b):
            return torch.cat([a + 1, b], dim=0) * 3

    a, b = torch.randint(-5, 5, (2, 3), generator=gen), torch.randint(-5, 5, (4, 3), generator=gen)
    engine = trtjit.compile(IntCat(), (a.to(DEVICE), b.to(DEVICE)), verify=True)
    assert torch.equal(engine(a.to(DEVICE), b.to(DEVICE)).cpu(), IntCat()(a, b))
    assert [t for t, _ in kernels(engine)] == ["pointwise"]

    class OneElements(nn.Module):  # one-element cat inputs (ONNX Range's loop): no index dim in their loads
        def forward(self, a, b):
            return torch.cat([a + 1.0, b * 2.0]) * 3.0

    a, b = torch.randn(1, generator=gen), torch.randn(1, generator=gen)
    engine = compile_checked(OneElements(), a, b)
    assert [t for t, _ in kernels(engine)] == ["pointwise"]

    class OneElement(nn.Module):  # an input computed from one element: a scalar load inside the select
        def forward(self, x, y):
            return torch.cat([x * 2.0, y + 1.0]) * 3.0

    engine = compile_checked(OneElement(), torch.randn(5, generator=gen), torch.randn(1, generator=gen))
    assert [t for t, _ in kernels(engine)] == ["pointwise"]


# ------------------------------------------------------------------------ residual add + LayerNorm/RMSNorm
ROW_RULE = rule_name("fuse_reductions", "ROW")


@pytest.mark.parametrize("norm", [nn.LayerNorm(24), nn.RMSNorm(24, eps=1e-6)], ids=["layernorm", "rmsnorm"])
def test_residual_add_and_norm_is_one_kernel(norm, gen):
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = norm
            with torch.no_grad():
                self.norm.weight.copy_(torch.rand(24, generator=gen) + 0.5)

        def forward(self, x, residual):
            h = x + residual
            return self.norm(h), h  # the sum is used later (the next residual): stored by the same kernel

    engine = compile_checked(Block(), torch.randn(2, 5, 24, generator=gen), torch.randn(2, 5, 24, generator=gen))
    (template, ops), = kernels(engine)
    assert template == "reduction" and ops[0] == "add"
    (node,) = [n for n in engine.graph if n.op == "fused_reduction"]
    assert len(node.outputs) == 2  # normalized rows and the residual sum
    assert events(engine, ROW_RULE)


def test_gemm_residual_add_then_rmsnorm(gen):
    """After a projection the residual add runs in the GEMM epilogue (one store of the sum); RMSNorm's
    square stays in the norm's prologue instead of being stored by the GEMM as a second tensor."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.o_proj, self.norm = nn.Linear(24, 24, bias=False), nn.RMSNorm(24, eps=1e-6)

        def forward(self, x, residual):
            h = residual + self.o_proj(x)
            return self.norm(h), h

    engine = compile_checked(Block(), torch.randn(2, 5, 24, generator=gen), torch.randn(2, 5, 24, generator=gen))
    ks = kernels(engine)
    assert ks[0] == ("gemm", ["matmul", "add"])
    assert len(ks) == 2 and ks[1][0] == "reduction" and ks[1][1][0] in ("mul", "pow_scalar")  # h * h
    assert ks[1][1][1] == "mean"
    (stop,) = events(engine, GEMM_RULE, fired_=False)
    assert "only feeds the reduction" in stop["detail"] and "left to its prologue" in stop["detail"]
    gemm = next(n for n in engine.graph if n.op == "fused_gemm")
    assert len(gemm.outputs) == 1


# -------------------------------------------------------------------------------- grouped-query attention
def _repeat_kv(g: Graph, x, n_rep: int, name: str):
    b, h, s, d = g.spec(x).shape
    u = op(g, "unsqueeze", [x], f"{name}.u", dim=2)
    e = op(g, "expand", [u], f"{name}.e", shape=[b, h, n_rep, s, d])
    return op(g, "reshape", [e], f"{name}.r", shape=[b, h * n_rep, s, d])


def test_fuse_attention_repeat_kv_becomes_grouped_query(gen):
    GQA = rule_name("fuse_attention", "GQA")
    g = Graph()
    q = inp(g, "q", 2, 4, 5, 8)
    k, v = inp(g, "k", 2, 2, 6, 8), inp(g, "v", 2, 2, 6, 3)
    att = op(g, "sdpa", [q, _repeat_kv(g, k, 2, "k"), _repeat_kv(g, v, 2, "v")], "att")
    # K repeated twice but V four times over one kv head: not a grouped-query pattern
    q2, k2, v2 = inp(g, "q2", 1, 4, 3, 8), inp(g, "k2", 1, 2, 3, 8), inp(g, "v2", 1, 1, 3, 8)
    odd = op(g, "sdpa", [q2, _repeat_kv(g, k2, 2, "k2"), _repeat_kv(g, v2, 4, "v2")], "odd")
    g.outputs = [att, odd]
    g, rec = check_pass("fuse_attention", g, gen)
    assert g.inputs_of("att")[1:] == [k, v] and g.node("att").attrs["enable_gqa"]
    assert fired(rec, GQA) == ["att"] and rec.fired[0]["detail"] == "2 query heads per kv head"
    assert not g.node("odd").attrs["enable_gqa"]
    assert skipped(rec, GQA)["odd"] == ["K and V are repeated 2 and 4 times"]


# -------------------------------------------------------------- flattened rows (GPT-2's Conv1D): one kernel
class Conv1D(nn.Module):
    """GPT-2's linear: addmm on rows flattened to 2-D, viewed back."""

    def __init__(self, nx: int, nf: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(nx, nf) * 0.2), nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x):
        y = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return y.view(x.size()[:-1] + (self.weight.size(-1),))


def test_flattened_addmm_then_activation_and_residual_is_one_kernel_each(gen):
    FLAT = rule_name("unflatten_matmul_rows", "FLAT")

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c_fc, self.c_proj = Conv1D(16, 48), Conv1D(48, 16)

        def forward(self, x):
            h = self.c_fc(x)
            h = 0.5 * h * (1.0 + torch.tanh(0.7978845608028654 * (h + 0.044715 * torch.pow(h, 3.0))))  # gelu_new
            return x + self.c_proj(h)

    engine = compile_checked(MLP(), torch.randn(2, 5, 16, generator=gen))
    ks = kernels(engine)
    assert [t for t, _ in ks] == ["gemm", "gemm"]
    assert "tanh" in ks[0][1] and ks[1][1] == ["matmul", "add", "add"]  # bias, then the residual add
    assert len(events(engine, FLAT)) == 2


def test_gpt2_mlp_of_transformers(gen):
    gpt2 = pytest.importorskip("transformers.models.gpt2.modeling_gpt2")
    cfg = pytest.importorskip("transformers").GPT2Config(n_embd=16, n_head=2)
    torch.manual_seed(0)
    engine = compile_checked(gpt2.GPT2MLP(64, cfg), torch.randn(2, 5, 16, generator=gen))
    assert [t for t, _ in kernels(engine)] == ["gemm", "gemm"]  # c_fc + gelu_new, c_proj


# ------------------------------------------------------------------------------------- random cat programs
class RandomCat(nn.Module):
    """cat along ``dim`` of pieces of x (narrow), each through a few pointwise ops or an inner cat, then an
    epilogue: the shapes the pointwise-select lowering must get right."""

    def __init__(self, dim: int, cuts: list[int], ops: list[str], post: str) -> None:
        super().__init__()
        self.dim, self.cuts, self.ops, self.post = dim, cuts, ops, post

    def forward(self, x, y):
        parts, start, d = [], 0, self.dim
        for c, o in zip(self.cuts, self.ops):
            p = x.narrow(d, start, c)
            if o == "neg":
                p = -p
            elif o == "exp2":
                p = torch.exp(p) * 2
            elif o == "y":
                p = p + y.narrow(d, 0, c)
            elif o == "bcast":
                p = p * y.narrow(d, 0, 1)
            elif o == "inner" and c > 1:
                p = torch.cat([-p.narrow(d, c // 2, c - c // 2), p.narrow(d, 0, c // 2)], d)
            parts.append(p)
            start += c
        out = torch.cat(parts, d)
        return {"mul": lambda: out * y, "tanh": lambda: torch.tanh(out) + x, "none": lambda: out + 0.0}[self.post]()


@pytest.mark.parametrize("seed", range(12))
def test_random_cat_programs(seed):
    import random

    rnd = random.Random(seed)
    shape = [rnd.randint(2, 5) for _ in range(3)]
    dim = rnd.randint(0, 2)
    bounds = sorted({0, shape[dim], *rnd.sample(range(1, shape[dim]), rnd.randint(0, shape[dim] - 1))})
    cuts = [b - a for a, b in zip(bounds, bounds[1:])]
    model = RandomCat(dim, cuts, [rnd.choice(["none", "neg", "exp2", "y", "bcast", "inner"]) for _ in cuts],
                      rnd.choice(["mul", "tanh", "none"]))
    gen = torch.Generator().manual_seed(seed)
    engine = compile_checked(model, torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))
    assert [t for t, _ in kernels(engine)] == ["pointwise"]  # every such program is one kernel


# ----------------------------------------------------------------------------------- random MLP blocks
class RandomBlock(nn.Module):
    """A residual MLP block of random make: nn.Linear (with or without bias) or GPT-2's Conv1D, an
    activation or SwiGLU, LayerNorm / RMSNorm / none, before or after: the epilogue, gating, flattened-rows
    and norm-prologue rules meet here in every combination."""

    def __init__(self, rnd, d: int) -> None:
        super().__init__()
        self.lin, self.act = rnd.choice(["linear", "conv1d", "nobias"]), rnd.choice(["gelu", "silu", "tanh", "swiglu"])
        self.order, norm = rnd.choice(["pre", "post"]), rnd.choice(["ln", "rms", "none"])

        def make(i: int, o: int) -> nn.Module:
            return Conv1D(i, o) if self.lin == "conv1d" else nn.Linear(i, o, bias=self.lin == "linear")

        self.fc1, self.fc2, self.up = make(d, 2 * d), make(2 * d, d), make(d, 2 * d)
        self.norm = {"ln": nn.LayerNorm(d), "rms": nn.RMSNorm(d), "none": nn.Identity()}[norm]

    def forward(self, x):
        h = self.norm(x) if self.order == "pre" else x
        a = self.fc1(h)
        a = F.silu(a) * self.up(h) if self.act == "swiglu" else {"gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}[self.act](a)
        y = x + self.fc2(a)
        return self.norm(y) if self.order == "post" else y


@pytest.mark.parametrize("seed", range(8))
def test_random_mlp_blocks(seed):
    import random

    rnd = random.Random(seed)
    torch.manual_seed(seed)
    d = rnd.choice([8, 12, 16])
    model = nn.Sequential(*[RandomBlock(rnd, d) for _ in range(rnd.randint(1, 2))])
    gen = torch.Generator().manual_seed(seed)
    engine = compile_checked(model, torch.randn(rnd.randint(1, 3), rnd.randint(2, 5), d, generator=gen))
    assert "pointwise" not in [t for t, _ in kernels(engine)]  # every activation, gate and residual is fused
