"""A model whose answer depends on its batch size (a Python branch): torch.jit.script keeps the
branch, torch.jit.trace freezes the one the example took. test_package uses it to show that the
.mar check catches a trace that does not generalise."""

from __future__ import annotations

import torch


class Branching(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 2:
            return x * 2.0
        return x - 1.0


def build() -> torch.nn.Module:
    return Branching().eval()
