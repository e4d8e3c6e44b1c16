"""BatchNorm folding into a preceding convolution or linear layer.

Requires: constant folding has run (conv bias is a constant add, BN statistics are constants).
Guarantees: every inference ``batch_norm`` directly after a conv2d (optionally + constant bias) or a
linear layer with constant weights, whose intermediate has no other user, is gone: the conv/linear weight
is scaled per output channel and the bias becomes ``(b - mean) * scale + beta``. Other BatchNorms stay
for ``decompose`` (they become a per-channel multiply-add that fuses anyway).
"""

from __future__ import annotations

import torch

from trtjit.fusion import rule, single_use
from trtjit.ir import Graph, Value
from trtjit.passmanager import PassContext

CONV_BN = rule("conv + bn => conv", "fold_batchnorm", "scale conv weights per output channel, fold the shift into the bias")
LINEAR_BN = rule("linear + bn => linear", "fold_batchnorm", "scale linear weights per output feature")


def _const(graph: Graph, v: Value) -> torch.Tensor | None:
    n = graph.node(v.node)
    return n.value if n.op == "constant" else None


def run(graph: Graph, ctx: PassContext) -> Graph:
    for name in graph.topo_order():
        if name not in graph or graph.node(name).op != "batch_norm":
            continue
        bn = graph.node(name)
        x, mean, var, gamma, beta = graph.inputs_of(name)
        stats = [_const(graph, v) for v in (mean, var, gamma, beta)]
        if any(s is None for s in stats):
            ctx.skipped(CONV_BN, name, "batch_norm statistics are not constants")
            continue
        mean_t, var_t, gamma_t, beta_t = (s.double() for s in stats)
        scale = gamma_t / torch.sqrt(var_t + bn.attrs["eps"])
        prod = graph.node(x.node)
        bias_v: Value | None = None
        old_add: str | None = None
        if prod.op == "add" and single_use(graph, x):
            a, b = graph.inputs_of(prod.name)
            bias = _const(graph, b)
            channels = graph.spec(a).shape[1] if len(graph.spec(a).shape) == 4 else -1
            per_channel = bias is not None and bias.numel() == channels and bias.dim() == 4 and bias.shape[1] == channels
            if per_channel and graph.node(a.node).op == "conv2d":
                old_add, bias_v, x, prod = prod.name, b, a, graph.node(a.node)
        if prod.op not in ("conv2d", "linear") or not single_use(graph, x):
            ctx.skipped(CONV_BN, name, f"input comes from {prod.op} {prod.name!r}, not a conv/linear used only here")
            continue
        ins = graph.inputs_of(prod.name)
        w = _const(graph, ins[1])
        if w is None or (prod.op == "linear" and len(graph.spec(ins[0]).shape) != 2):
            ctx.skipped(CONV_BN, name, "weights are not constants" if w is None else "linear input is not 2-D")
            continue
        if prod.op == "linear" and len(ins) > 2:
            bias_v = ins[2]
        dt = w.dtype
        cshape = [-1] + [1] * (w.dim() - 1)
        old_bias = (_const(graph, bias_v).double().reshape(-1) if bias_v is not None
                    else torch.zeros_like(mean_t))
        new_w = (w.double() * scale.reshape(cshape)).to(dt)
        new_b = ((old_bias - mean_t) * scale + beta_t).to(dt)
        wv = graph.add_constant(f"{prod.name}.weight_bn", new_w, source=prod.source)
        graph.set_input(prod.name, 1, wv)
        if prod.op == "conv2d":
            bv = graph.add_constant(f"{prod.name}.bias_bn", new_b.reshape(1, -1, 1, 1), source=prod.source)
            out = Value(graph.add("add", [Value(prod.name), bv], name=f"{prod.name}.bias", source=prod.source).name)
            graph.replace_all_uses(Value(name), out)
            rule_name = CONV_BN
        else:
            bv = graph.add_constant(f"{prod.name}.bias_bn", new_b, source=prod.source)
            if len(ins) > 2:
                graph.set_input(prod.name, 2, bv)
                graph.replace_all_uses(Value(name), Value(prod.name))
            else:
                out = Value(graph.add("add", [Value(prod.name), bv], name=f"{prod.name}.bias", source=prod.source).name)
                graph.replace_all_uses(Value(name), out)
            rule_name = LINEAR_BN
        graph.remove_node(name)
        if old_add is not None:
            graph.remove_node(old_add)
        ctx.fired(rule_name, prod.name, f"folded {name}")
    return graph
