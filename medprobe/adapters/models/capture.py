"""Forward hooks that pool the chosen layers' outputs on the device during one forward pass.

Only the requested layers get a hook; each hook pools its layer's output immediately, so no
full hidden state outlives its layer. When the deepest requested layer has run, its hook stops
the forward pass (the remaining layers and the head would only be thrown away).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

PoolFn = Callable[[str, torch.Tensor], torch.Tensor]


class _StopForward(Exception):
    """Raised by the deepest hook to end the forward pass early."""


def layer_output(output: object) -> torch.Tensor:
    """The hidden-state tensor of a block's output (a tensor, or a tuple/ModelOutput whose first item is)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    first = getattr(output, "last_hidden_state", None)
    if isinstance(first, torch.Tensor):
        return first
    raise TypeError(f"cannot find the hidden states in a layer output of type {type(output).__name__}")


class PooledCapture:
    """Context manager: hooks ``modules[i]`` for every requested layer ``i`` and collects pooled outputs.

    ``pool(name, hidden)`` turns one layer output ``(batch, ..., hidden)`` into ``(batch, hidden)``.
    Run the forward pass through :meth:`run`, which swallows the early stop.
    """

    def __init__(
        self,
        modules: Sequence[nn.Module] | nn.ModuleList,
        layers: Sequence[int],
        poolings: Sequence[str],
        pool: PoolFn,
        *,
        stop_early: bool = True,
        extract: Callable[[object], torch.Tensor] = layer_output,
        observe: Callable[[int, torch.Tensor], None] | None = None,
    ) -> None:
        """``observe(layer, hidden)``, when given, sees every hooked layer's raw output (token grids are read off
        it)."""
        self.modules = modules
        self.layers = sorted({int(i) for i in layers})
        self.poolings = list(dict.fromkeys(poolings))
        self.pool = pool
        self.stop_early = stop_early
        self.extract = extract
        self.observe = observe
        self.results: dict[tuple[str, int], torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, layer: int) -> Callable:
        deepest = layer == self.layers[-1]

        def hook(_module: nn.Module, _args: object, output: object) -> None:
            hidden = self.extract(output)
            if self.observe is not None:
                self.observe(layer, hidden)
            for name in self.poolings:
                self.results[(name, layer)] = self.pool(name, hidden)
            if deepest and self.stop_early:
                raise _StopForward

        return hook

    def __enter__(self) -> PooledCapture:
        self.results = {}
        for layer in self.layers:
            self._handles.append(self.modules[layer].register_forward_hook(self._hook(layer)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def run(self, forward: Callable[[], object]) -> dict[tuple[str, int], torch.Tensor]:
        """Call ``forward()`` with the hooks in place; returns ``{(pooling, layer): (batch, hidden)}``."""
        with self, contextlib.suppress(_StopForward):
            forward()
        missing = [layer for layer in self.layers if (self.poolings[0], layer) not in self.results]
        if missing:
            raise RuntimeError(f"layers {missing} did not run in the forward pass")
        return self.results
