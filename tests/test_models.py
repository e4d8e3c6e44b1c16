"""Real architectures at reduced size, compiled completely to trtjit kernels and matched to PyTorch.

torchvision does not import beside the CPU torch wheel here, so the vision blocks are written out below
(they follow torchvision's definitions); the language models come from `transformers` configs with random
weights. Each is checked against a float64 reference within 1e-4 relative error.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import DEVICE, assert_close_rel
from torch import nn

import trtjit


def _randomize(model: nn.Module, gen: torch.Generator) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


def check(model: nn.Module, inputs: tuple, **opts) -> trtjit.Engine:
    model = model.eval()
    engine = trtjit.compile(model.to(DEVICE), tuple(t.to(DEVICE) for t in inputs), verify=True, **opts)
    with torch.no_grad():
        ref = copy.deepcopy(model).double().cpu()(*(t.double().cpu() if t.is_floating_point() else t.cpu()
                                                     for t in inputs))
    out = engine(*(t.to(DEVICE) for t in inputs))
    assert ref.abs().max() > 0
    assert_close_rel(out.double().cpu(), ref, tol=1e-4)
    kinds = {trtjit.ops.get_op(n.op).kind for n in engine.graph}
    assert kinds <= {"source", "view", "pointwise", "reduction", "gemm", "conv", "pool", "gather", "cat",
                     "attention", "fused"}, kinds
    return engine


# ----------------------------------------------------------------------------------------- vision blocks
def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act()] if act else []))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, act=None)
        self.down = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return torch.relu(self.conv2(self.conv1(x)) + self.down(x))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, width, 1), conv_bn(width, width, 3, stride), conv_bn(width, width * 4, 1, act=None))
        self.down = conv_bn(cin, width * 4, 1, stride, act=None)

    def forward(self, x):
        return torch.relu(self.body(x) + self.down(x))


class ResNet(nn.Module):
    def __init__(self, block: str) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 7, 2), nn.MaxPool2d(3, 2, 1))
        if block == "basic":
            self.layers = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 16, 2))
            feat = 16
        else:
            self.layers = nn.Sequential(Bottleneck(8, 4, 1), Bottleneck(16, 8, 2))
            feat = 32
        self.fc = nn.Linear(feat, 10)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, squeeze: int, act=nn.ReLU, gate=nn.Sigmoid) -> None:
        super().__init__()
        self.fc1, self.fc2, self.act, self.gate = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1), act(), gate()

    def forward(self, x):
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class InvertedResidual(nn.Module):
    """MobileNetV2 (ReLU6, no SE), MobileNetV3 (hardswish + SE with hardsigmoid) or EfficientNet MBConv (SiLU + SE)."""

    def __init__(self, cin: int, cout: int, expand: int, stride: int, kind: str) -> None:
        super().__init__()
        hid = cin * expand
        act = {"v2": nn.ReLU6, "v3": nn.Hardswish, "effnet": nn.SiLU}[kind]
        layers = [conv_bn(cin, hid, 1, act=act), conv_bn(hid, hid, 3, stride, groups=hid, act=act)]
        if kind == "v3":
            layers.append(SqueezeExcite(hid, 8, gate=nn.Hardsigmoid))
        elif kind == "effnet":
            layers.append(SqueezeExcite(hid, max(1, cin // 4), act=nn.SiLU))
        layers.append(conv_bn(hid, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNet(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        act = {"v2": nn.ReLU6, "v3": nn.Hardswish, "effnet": nn.SiLU}[kind]
        self.features = nn.Sequential(conv_bn(3, 8, 3, 2, act=act), InvertedResidual(8, 8, 2, 1, kind),
                                      InvertedResidual(8, 16, 3, 2, kind), InvertedResidual(16, 16, 3, 1, kind))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, 10))

    def forward(self, x):
        return self.classifier(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1, self.pw2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(nn.functional.gelu(self.pw1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, 4), LayerNorm2d(16, eps=1e-6))
        self.stages = nn.Sequential(ConvNeXtBlock(16), LayerNorm2d(16, eps=1e-6), nn.Conv2d(16, 32, 2, 2),
                                    ConvNeXtBlock(32))
        self.head = nn.Sequential(nn.Flatten(1), nn.LayerNorm(32, eps=1e-6), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(nn.functional.adaptive_avg_pool2d(self.stages(self.stem(x)), 1))


class ViT(nn.Module):
    """torchvision's ViT structure: patch conv, class token (cat), position embedding, encoder, head."""

    def __init__(self, image: int = 16, patch: int = 4, dim: int = 32, layers: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.1)
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1) + self.pos
        return self.head(self.ln(self.encoder(t))[:, 0])


VISION = {
    "resnet18_block": lambda: ResNet("basic"),
    "resnet50_block": lambda: ResNet("bottleneck"),
    "mobilenet_v2": lambda: MobileNet("v2"),
    "mobilenet_v3": lambda: MobileNet("v3"),
    "efficientnet_b0": lambda: MobileNet("effnet"),
    "convnext": ConvNeXt,
    "vit_b_16": ViT,
}


def all_nodes(engine: trtjit.Engine) -> list:
    """Every IR node the engine runs, fused bodies included."""
    out = []
    for n in engine.graph:
        out.append(n)
        if "body" in n.attrs:
            out.extend(b for b in n.attrs["body"] if b.op not in ("input", "constant"))
    return out


def ops_in(engine: trtjit.Engine) -> set[str]:
    return {n.op for n in all_nodes(engine)}


def _convs(engine: trtjit.Engine) -> list:
    """(conv2d node, weight shape) of every convolution kernel."""
    out = []
    for n in engine.graph:
        body = n.attrs.get("body")
        for b in body if body is not None else []:
            if b.op == "conv2d":
                out.append((b, body.spec(body.inputs_of(b.name)[1]).shape))
    return out


def _has_squeeze_excite(engine: trtjit.Engine, gate: str) -> bool:
    """SE: a global average pool (mean over H, W), 1x1 convs on [N, C, 1, 1], ``gate``, and the channel
    scale ``x * gate`` broadcast over H, W."""
    nodes = all_nodes(engine)
    pooled = any(n.op == "mean" and n.attrs["dims"] == [2, 3] and n.attrs["keepdim"] for n in nodes)
    squeezed = [n for n in nodes if n.op == "conv2d" and n.spec.shape[2:] == (1, 1)]
    scale = any(n.op == "mul" and len(n.spec.shape) == 4 and n.spec.shape[2:] != (1, 1) for n in nodes)
    return pooled and len(squeezed) >= 2 and gate in ops_in(engine) and scale


def _check_features(name: str, engine: trtjit.Engine) -> None:
    """The architecture-specific pieces issue 3 names are really there (and compiled)."""
    ops, nodes = ops_in(engine), all_nodes(engine)
    assert nodes
    if name.startswith("resnet"):
        assert not any(n.op == "batch_norm" for n in engine.graph)  # every BN folded into its conv
        assert "max_pool2d" in ops
    if name == "mobilenet_v3":
        assert {"hardswish", "hardsigmoid"} <= ops
        assert _has_squeeze_excite(engine, "hardsigmoid")
    if name == "efficientnet_b0":
        assert {"silu", "sigmoid"} <= ops
        assert _has_squeeze_excite(engine, "sigmoid")
    if name in ("mobilenet_v2", "mobilenet_v3", "efficientnet_b0"):  # depthwise conv + activation: one kernel
        dw = [n for n in engine.graph if n.op == "fused_gemm" and any(
            b.op == "conv2d" and b.attrs["groups"] > 1 and b.attrs["groups"] == n.spec.shape[1] for b in n.attrs["body"])]
        assert dw and all(len(n.attrs["body"].nodes) > 3 for n in dw)
    if name == "convnext":
        assert "gelu" in ops
        dw = [(n, w) for n, w in _convs(engine) if n.attrs["groups"] > 1]
        assert dw and all(n.attrs["groups"] == n.spec.shape[1] and w[2:] == (7, 7) for n, w in dw)  # 7x7 depthwise
        # LayerNorm over channels: row statistics over the channel dim of an NHWC-ordered [N, H, W, C]
        chan_norms = [n for n in nodes if n.op == "mean" and len(n.attrs["dims"]) == 1 and n.attrs["dims"][0] == 3]
        assert chan_norms
    if name == "vit_b_16":
        assert any(k.template == "attention" for k in engine.kernels)


@pytest.mark.parametrize("name", list(VISION))
def test_vision_architecture(name, gen):
    torch.manual_seed(0)
    model = _randomize(VISION[name](), gen)
    engine = check(model, (torch.randn(2, 3, 16, 16, generator=gen),))
    _check_features(name, engine)


# -------------------------------------------------------------------------------------- language models
transformers = pytest.importorskip("transformers")


class LastHidden(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).last_hidden_state


def _hf(model_cls, config_cls, model_kwargs=None, **cfg):
    torch.manual_seed(0)
    return LastHidden(model_cls(config_cls(**cfg), **(model_kwargs or {}))).eval()


TINY = dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64, vocab_size=64,
            max_position_embeddings=32)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bert(attn, gen):
    model = _hf(transformers.BertModel, transformers.BertConfig, attn_implementation=attn, **TINY)
    engine = check(model, (torch.randint(0, 64, (2, 8), generator=gen),))
    assert sum(k.template == "attention" for k in engine.kernels) == 2  # the eager pattern lowers to it too


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_gpt2(attn, gen):
    model = _hf(transformers.GPT2Model, transformers.GPT2Config, attn_implementation=attn, n_embd=32, n_head=4,
                n_layer=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0)
    check(model, (torch.randint(0, 64, (2, 8), generator=gen),))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_llama(attn, gen):
    layers = 2
    model = _hf(transformers.LlamaModel, transformers.LlamaConfig, hidden_size=32, num_attention_heads=4,
                num_key_value_heads=2, num_hidden_layers=layers, intermediate_size=64, vocab_size=64,
                max_position_embeddings=32, bos_token_id=0, eos_token_id=0, attn_implementation=attn)
    engine = check(model, (torch.randint(0, 64, (2, 8), generator=gen),))
    templates = [k.template for k in engine.kernels]
    # RMSNorm: rsqrt of the mean of squares, one row kernel per norm (2 per layer and the final one)
    norms = [n for n in engine.graph if n.op == "fused_reduction" and "rsqrt" in {b.op for b in n.attrs["body"]}]
    assert len(norms) == 2 * layers + 1
    # RoPE: rotate_half's cat runs inside one pointwise kernel per rotated tensor (q and k)
    rope = [n for n in engine.graph if n.op == "fused_pointwise" and "cat" in {b.op for b in n.attrs["body"]}]
    assert len(rope) == 2 * layers and "cat" not in templates
    # GQA: 4 query heads over 2 kv heads, read in place (no repeat_kv copies)
    sdpa = [n for n in engine.graph if n.op == "sdpa"]
    assert len(sdpa) == layers and all(n.attrs["enable_gqa"] for n in sdpa)
    assert all(engine.graph.spec(engine.graph.inputs_of(n.name)[1]).shape[1] == 2 for n in sdpa)
    # SiLU: SwiGLU's silu(gate) * up in the gate GEMM's epilogue
    gated = [n for n in engine.graph if n.op == "fused_gemm" and {"silu", "mul"} <= {b.op for b in n.attrs["body"]}]
    assert len(gated) == layers
    # embedding, then per layer: norm, QKV GEMM, 2 RoPE, attention, o_proj(+residual), norm, up, gate, down
    assert len(engine.kernels) == 1 + 10 * layers + 1, templates


def test_hf_vit(gen):
    model = _hf(transformers.ViTModel, transformers.ViTConfig, hidden_size=32, num_attention_heads=4,
                num_hidden_layers=2, intermediate_size=64, image_size=16, patch_size=4,
                model_kwargs={"add_pooling_layer": False})
    check(model, (torch.randn(2, 3, 16, 16, generator=gen),))


@pytest.mark.parametrize("name", ["resnet50_block", "mobilenet_v3", "convnext"])
def test_conv_nets_run_channels_last_without_layout_changes(name, gen):
    torch.manual_seed(0)
    engine = check(_randomize(VISION[name](), gen), (torch.randn(2, 3, 16, 16, generator=gen),))
    convs = [n for n in engine.graph if n.op == "fused_gemm" and any(b.op == "conv2d" for b in n.attrs["body"])]
    assert convs and all(n.attrs["out_perm"] == [0, 2, 3, 1] for n in convs)
    assert engine.graph.meta["layout_changes"] == 0  # no transpose or copy kernel anywhere, except
    # the NHWC copy of the image a 7x7 RGB stem reads (passes/stem_input_nhwc)
    copies = [k for k in engine.kernels if k.template == "pointwise"
              and all(engine._op_of(k, c) == "copy" for c in k.covers)]
    assert all(k.name.startswith("nhwc_") and engine.graph.inputs_of(k.node)[0].node in engine.graph.inputs
               for k in copies)
    assert len(copies) == (name == "resnet50_block")


class ConvOut(nn.Module):
    """A 4-D graph output and a flatten that NHWC storage would break: both stay NCHW."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = conv_bn(3, 4, 3), conv_bn(4, 4, 3)

    def forward(self, x):
        y = self.a(x)
        return self.b(y), y.flatten(1)


def test_layout_stays_nchw_where_nhwc_would_cost_a_copy(gen):
    model = _randomize(ConvOut(), gen)
    x = torch.randn(2, 3, 6, 6, generator=gen)
    engine = trtjit.compile(model.to(DEVICE), (x.to(DEVICE),), verify=True)
    out, flat = engine(x.to(DEVICE))
    ref_out, ref_flat = model(x.to(DEVICE))
    assert_close_rel(out, ref_out)
    assert_close_rel(flat, ref_flat)
    assert not any(n.attrs.get("out_perm") for n in engine.graph if n.op == "fused_gemm")
    rec = next(r for r in engine.build_log if r.name == "layout_nhwc")
    assert any(not e["fired"] and "reshape need a copy" in e["detail"] for e in rec.events)


ROPE_FAMILY = {
    "mistral": ("MistralModel", "MistralConfig", dict(num_key_value_heads=2)),  # sliding-window mask (a & b), GQA
    "phi": ("PhiModel", "PhiConfig", dict(partial_rotary_factor=0.5)),  # RoPE on half the head dims
    "gpt_neox": ("GPTNeoXModel", "GPTNeoXConfig", dict(rotary_pct=0.5)),
}


@pytest.mark.parametrize("name", list(ROPE_FAMILY))
def test_rotary_decoders(name, gen):
    model_cls, cfg_cls, extra = ROPE_FAMILY[name]
    model = _hf(getattr(transformers, model_cls), getattr(transformers, cfg_cls), hidden_size=32,
                num_attention_heads=4, num_hidden_layers=1, intermediate_size=64, vocab_size=64,
                max_position_embeddings=32, **extra)
    engine = check(model, (torch.randint(0, 64, (2, 8), generator=gen),))
    rope = [n for n in engine.graph if n.op == "fused_pointwise" and "cat" in {b.op for b in n.attrs["body"]}]
    assert len(rope) == 2 and "cat" not in [k.template for k in engine.kernels]  # q and k: one kernel each


def test_gptj_interleaved_rotary(gen):
    """GPT-J: rotary on every other element (stack + flatten), sin/cos picked by position (indexing) and
    repeated (repeat_interleave). Compiled and matched; its rotation is not one kernel yet."""
    model = _hf(transformers.GPTJModel, transformers.GPTJConfig, n_embd=32, n_head=4, n_layer=1, rotary_dim=4,
                vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0)
    check(model, (torch.randint(0, 64, (2, 8), generator=gen),))
