"""Patch-token activations: every token of a layer's grid, one flat row per image (``extract --tokens``).

The pseudo-pooling :data:`TOKENS` keeps a layer's token states instead of pooling them: ``(batch, tokens, hidden)``
flattened to ``(batch, tokens * hidden)``, so token rows go through the same segments, manifest, verification and
compaction as pooled rows. A row holds the prefix tokens first (class and register tokens, kept apart from the
grid: ``n_prefix`` of them), then the grid's tokens in row-major order (row 0 left to right, then row 1, ...), the
order the model lays its patches (ViTs), its feature map's positions (CNNs) or its image tokens (decoder VLMs) out.
:class:`TokenGrid` says how to cut a row back into that grid.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from medprobe.errors import InvalidInputError

TOKENS = "tokens"


@dataclass(frozen=True)
class TokenGrid:
    """How one layer's token row is laid out: ``n_prefix`` tokens, then a ``rows`` x ``cols`` grid, each ``hidden``
    wide; ``pooled`` names the pooling that is the mean of the grid's tokens (``image_mean`` or ``spatial_mean``)."""

    n_prefix: int
    rows: int
    cols: int
    hidden: int
    pooled: str

    @property
    def n_tokens(self) -> int:
        return self.n_prefix + self.rows * self.cols

    @property
    def width(self) -> int:
        """The row width in the store: every token's hidden state."""
        return self.n_tokens * self.hidden

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def square_grid(n: int, what: str) -> tuple[int, int]:
    """``(k, k)`` for ``n = k * k`` tokens; refused (naming ``what``) otherwise."""
    k = math.isqrt(n)
    if k * k != n:
        raise InvalidInputError(f"{what}: {n} tokens do not form a square grid, and the model does not say its "
                                "grid; token maps need a fixed grid")  # fmt: skip
    return k, k


def flatten(tokens: torch.Tensor) -> torch.Tensor:
    """``(batch, tokens, hidden)`` -> ``(batch, tokens * hidden)`` float32."""
    return tokens.float().reshape(tokens.shape[0], -1)


def feature_map_tokens(hidden: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
    """A CNN feature map ``(batch, C, H, W)`` (or NHWC) as ``(batch, H * W, C)`` in row-major order."""
    nhwc = hidden if channels_last else hidden.permute(0, 2, 3, 1)
    return nhwc.reshape(nhwc.shape[0], -1, nhwc.shape[-1])
