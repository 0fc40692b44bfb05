"""A mid-sized PyTorch MLP (512 features -> 10 classes, 1.6 M weights) for the quantisation
figures in docs/performance.md: large enough that int8 matrix products can pay off.

`build()` always returns the same weights (seeded, without touching the caller's random state).
"""

from __future__ import annotations

import torch
from torch import nn

IN_FEATURES = 512
CLASSES = 10


def build() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(IN_FEATURES, 1024),
            nn.ReLU(),
            nn.Linear(1024, 1024),
            nn.ReLU(),
            nn.Linear(1024, CLASSES),
        )
    return model.eval()
