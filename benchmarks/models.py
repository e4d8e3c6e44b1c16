"""The benchmark models, built from configs with random weights (nothing is downloaded).

torchvision models need torchvision (present on the GPU machine); transformers models need transformers.
Each factory returns (model in eval mode, example inputs) for a batch size and a device.
"""

from __future__ import annotations

import torch


def resnet50(batch: int) -> tuple[torch.nn.Module, tuple]:
    import torchvision
    return torchvision.models.resnet50(), (torch.randn(batch, 3, 224, 224),)


def mobilenet_v2(batch: int):
    import torchvision
    return torchvision.models.mobilenet_v2(), (torch.randn(batch, 3, 224, 224),)


def vit_b_16(batch: int):
    import torchvision
    return torchvision.models.vit_b_16(), (torch.randn(batch, 3, 224, 224),)


def fp16_cuda(name: str, batch: int) -> tuple[torch.nn.Module, tuple]:
    """Model ``name`` at ``batch`` as every benchmark runs it: seed 0, random weights, eval, fp16 on the GPU,
    with its example inputs there (floating ones in fp16, token ids as they are)."""
    torch.manual_seed(0)
    model, inputs = MODELS[name](batch)
    model = randomize(model).eval().cuda().half()
    return model, tuple(t.cuda().half() if t.is_floating_point() else t.cuda() for t in inputs)


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Randomly initialized models may zero some matrices (ViT's head); give them values so the output
    check compares real numbers."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(0.0, 0.02)
        for m in model.modules():  # trained BatchNorms have non-trivial statistics
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


class _HFWrapper(torch.nn.Module):
    """Returns the last hidden state only, so every model has one tensor output."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).last_hidden_state


def bert_base(batch: int, seq: int = 128, attn: str = "sdpa", **cfg):
    from transformers import BertConfig, BertModel
    config = BertConfig(attn_implementation=attn, **cfg)
    return _HFWrapper(BertModel(config, add_pooling_layer=False)), (torch.randint(0, config.vocab_size, (batch, seq)),)


def gpt2(batch: int, seq: int = 128, attn: str = "sdpa", **cfg):
    from transformers import GPT2Config, GPT2Model
    config = GPT2Config(attn_implementation=attn, **cfg)
    return _HFWrapper(GPT2Model(config)), (torch.randint(0, config.vocab_size, (batch, seq)),)


def llama(batch: int, seq: int = 128, attn: str = "sdpa", **cfg):
    from transformers import LlamaConfig, LlamaModel
    config = LlamaConfig(attn_implementation=attn, **cfg)
    return _HFWrapper(LlamaModel(config)), (torch.randint(0, config.vocab_size, (batch, seq)),)


MODELS = {"resnet50": resnet50, "mobilenet_v2": mobilenet_v2, "vit_b_16": vit_b_16, "bert_base": bert_base,
          "gpt2": gpt2}
