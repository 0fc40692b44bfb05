"""A tiny PyTorch classifier for `make demo` and the runtime tests: 4 features -> 3 classes.

`build()` always returns the same weights (seeded, without touching the caller's random state):
the demo and the tests compare a served prediction with torch's answer from a fresh `build()`.
"""

from __future__ import annotations

import torch
from torch import nn

IN_FEATURES = 4
CLASSES = 3


def build() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(IN_FEATURES, 16),
            nn.ReLU(),
            nn.Linear(16, CLASSES),
        )
    return model.eval()
