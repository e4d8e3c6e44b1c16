"""Built-in example models: small enough for the Triton interpreter, varied enough to use every template."""

from __future__ import annotations

import torch
from torch import nn


class ExampleNet(nn.Module):
    """A conv stem (conv + BN + ReLU, max-pool) feeding a transformer encoder layer and a linear head."""

    def __init__(self, channels: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                                  nn.MaxPool2d(2), nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels * 2), nn.ReLU())
        self.encoder = nn.TransformerEncoderLayer(channels * 2, 4, channels * 4, dropout=0.0, batch_first=True)
        self.head = nn.Linear(channels * 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stem(x)                      # [B, C, H/2, W/2]
        tokens = f.flatten(2).transpose(1, 2)  # [B, HW/4, C]
        return self.head(self.encoder(tokens).mean(dim=1))


class MLP(nn.Module):
    def __init__(self, d_in: int = 32, hidden: int = 64, d_out: int = 10) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _randomize_bn(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Give BatchNorm layers non-trivial running statistics, as a trained model has."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model


def example(name: str = "example_net", batch: int = 2, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """(model in eval mode, example inputs) for a built-in example."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if name == "example_net":
        model = _randomize_bn(ExampleNet(), gen)
        inputs = (torch.randn(batch, 3, 16, 16, generator=gen),)
    elif name == "mlp":
        model, inputs = MLP(), (torch.randn(batch, 32, generator=gen),)
    elif name == "transformer_layer":
        model = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        inputs = (torch.randn(batch, 8, 32, generator=gen),)
    else:
        raise KeyError(f"unknown example {name!r}; choose one of {EXAMPLES}")
    return model.eval(), inputs


EXAMPLES = ("example_net", "mlp", "transformer_layer")
