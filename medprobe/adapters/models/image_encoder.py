"""Image encoders from timm and open_clip: hooks on the blocks, one more layer for the model's own embedding.

Layer ``i < n_blocks`` is the output of block ``i`` (a ViT block's residual stream, or a CNN stage's
feature map), captured by a forward hook; layer ``n_blocks`` is the embedding the library itself returns
for the image (timm: ``forward_head(forward_features(x), pre_logits=True)``; open_clip: ``encode_image``),
so ``-l -1`` is what a user of the library calls "the features".

Poolings: token outputs ``(batch, tokens, hidden)`` give ``cls`` (the class token), ``image_mean`` (mean
of the patch tokens: class and register tokens excluded) and ``mean`` (all tokens); feature maps give
``spatial_mean``. The embedding layer is already one vector per image: every pooling returns it.

Preprocessing is the library's own eval transform (a torchvision ``Compose``) applied to each RGB image.
"""

from __future__ import annotations

import inspect
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from PIL import Image
from torch import nn

from medprobe.adapters.adapter import Adapter, ModelIdentity, Preprocessor
from medprobe.adapters.device_decode import DevicePreprocess, compose_device_preprocess
from medprobe.adapters.models.base import compute_dtype
from medprobe.adapters.models.capture import PooledCapture
from medprobe.adapters.models.tokens import TOKENS, TokenGrid, feature_map_tokens, flatten, square_grid
from medprobe.adapters.models.vision_tower import to_rgb
from medprobe.errors import InvalidInputError
from medprobe.featurestore import config_json

TOKEN_POOLINGS = ("cls", "image_mean", "mean")
SPATIAL_POOLINGS = ("spatial_mean",)


class TransformPreprocessor(Preprocessor):
    """A per-image eval transform (PIL -> CHW float tensor), stacked into ``pixel_values``; picklable."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor], name: str) -> None:
        self.transform = transform
        self.name = name

    def __call__(self, images: Sequence[Image.Image], prompt: str | None = None) -> dict[str, torch.Tensor]:
        if prompt is not None:
            raise InvalidInputError(f"{self.name} is an image encoder and takes no prompt: leave out --prompt")
        if not images:
            raise InvalidInputError("preprocess got an empty batch of images")
        return {"pixel_values": torch.stack([self.transform(image) for image in to_rgb(images)])}


@dataclass(frozen=True)
class BlockLayout:
    """How a block's output is laid out: tokens (with ``n_prefix`` class/register tokens) or a feature map."""

    tokens: bool
    n_prefix: int = 0  # class + register tokens before the patch tokens
    has_cls: bool = False  # the first prefix token is a class token
    seq_first: bool = False  # tokens come as (tokens, batch, hidden) (open_clip with batch_first=False)
    channels_last: bool = False  # feature maps come as NHWC (e.g. timm's Swin)

    @property
    def poolings(self) -> tuple[str, ...]:
        """The poolings this layout can serve (and ``tokens``, every token: ``extract --tokens``)."""
        if not self.tokens:
            return SPATIAL_POOLINGS
        return TOKEN_POOLINGS if self.has_cls else TOKEN_POOLINGS[1:]


def pool_block(name: str, hidden: torch.Tensor, layout: BlockLayout) -> torch.Tensor:
    """Pool one block output to ``(batch, hidden)`` float32; a 2-D input (an embedding) is returned as is. ``tokens``
    keeps every token (prefix tokens first) or feature-map position, flattened."""
    if name == TOKENS:
        if layout.tokens and hidden.ndim == 3:
            return flatten(hidden.transpose(0, 1) if layout.seq_first else hidden)
        if not layout.tokens and hidden.ndim == 4:
            return flatten(feature_map_tokens(hidden, channels_last=layout.channels_last))
        raise InvalidInputError("--tokens: the model's embedding layer (the last) is one vector per image and has no "
                                "token grid; ask for block layers")  # fmt: skip
    if hidden.ndim == 2:
        return hidden.float()
    if layout.tokens and hidden.ndim == 3:
        tokens = hidden.transpose(0, 1) if layout.seq_first else hidden
        if name == "cls":
            return tokens[:, 0].float()
        if name == "image_mean":
            return tokens[:, layout.n_prefix :].float().mean(dim=1)
        if name == "mean":
            return tokens.float().mean(dim=1)
    if not layout.tokens and hidden.ndim == 4 and name == "spatial_mean":
        return hidden.float().mean(dim=(1, 2) if layout.channels_last else (2, 3))
    raise InvalidInputError(f"cannot apply pooling {name!r} to a block output of shape {tuple(hidden.shape)}")


def block_output(output: object) -> torch.Tensor:
    """The tensor a block returns (some blocks return a tuple whose first item is the hidden state)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find the hidden states in a block output of type {type(output).__name__}")


class BlockEncoderAdapter(Adapter):
    """An image encoder with a block list and a final embedding; subclasses say how to run each."""

    blocks: Sequence[nn.Module]
    layout: BlockLayout

    def __init__(
        self,
        model: nn.Module,
        *,
        blocks: Sequence[nn.Module],
        layout: BlockLayout,
        preprocessor: Preprocessor,
        model_id: str,
        revision: str,
        adapter: str,
        preprocessing: Mapping[str, Any],
        layer_semantics: str,
        hidden_sizes: Sequence[int],
        extra: Mapping[str, Any],
    ) -> None:
        """``hidden_sizes``: one width per block, then the embedding's."""
        self.model = model.eval()
        if not layout.tokens:  # CNNs: channels-last convolutions are faster on CPU and GPU alike
            self.model = self.model.to(memory_format=torch.channels_last)
            self.cpu_batch_size = 4
        self.blocks = blocks
        self.layout = layout
        self.preprocessor = preprocessor
        self.identity = ModelIdentity(
            model_id=model_id,
            model_revision=revision,
            adapter=adapter,
            preprocessing=config_json(dict(preprocessing)),
            layer_semantics=layer_semantics,
            n_layers=len(blocks) + 1,
            hidden_sizes=tuple(int(width) for width in hidden_sizes),
            supported_poolings=layout.poolings,
            default_pooling=layout.poolings[0],
            takes_prompt=False,
            extra=dict(extra),
        )
        self.device = next(model.parameters()).device
        self.dtype = compute_dtype(model)

    @property
    def n_blocks(self) -> int:
        """Number of hooked blocks; layer ``n_blocks`` is the embedding."""
        return len(self.blocks)

    @abstractmethod
    def run_blocks(self, pixel_values: torch.Tensor) -> object:
        """Run the encoder at least through its last block (the hooks stop it early)."""

    @abstractmethod
    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The library's own embedding of the images (the last layer)."""

    token_refusal = None

    def patch_grid(self, n_tokens: int) -> tuple[int, int]:
        """The ``(rows, cols)`` of ``n_tokens`` patch tokens (square unless a subclass knows the model's grid)."""
        return square_grid(n_tokens, f"{self.identity.model_id} patch tokens")

    def token_grids(self, batch: Mapping[str, torch.Tensor]) -> dict[int, TokenGrid]:
        """Every block's grid (the embedding layer has none), from one forward pass of ``batch``."""
        grids: dict[int, TokenGrid] = {}

        def observe(layer: int, hidden: torch.Tensor) -> None:
            if self.layout.tokens:
                tokens = hidden.transpose(0, 1) if self.layout.seq_first else hidden
                rows, cols = self.patch_grid(tokens.shape[1] - self.layout.n_prefix)
                grids[layer] = TokenGrid(self.layout.n_prefix, rows, cols, int(tokens.shape[2]), "image_mean")
            else:
                c, h, w = (hidden.shape[3], hidden.shape[1], hidden.shape[2]) if self.layout.channels_last \
                    else hidden.shape[1:4]  # fmt: skip
                grids[layer] = TokenGrid(0, int(h), int(w), int(c), "spatial_mean")

        x = batch["pixel_values"].to(device=self.device, dtype=self.dtype)
        if not self.layout.tokens:
            x = x.contiguous(memory_format=torch.channels_last)
        capture = PooledCapture(self.blocks, range(self.n_blocks), ["mean" if self.layout.tokens else
                                "spatial_mean"], lambda name, h: h.new_zeros(1), extract=block_output,
                                observe=observe)  # fmt: skip
        with torch.no_grad():
            capture.run(lambda: self.run_blocks(x))
        return grids

    def device_preprocess(self) -> DevicePreprocess | None:
        """The library's eval transform rebuilt for tensors on the model's device (None if a step has no tensor
        form)."""
        if not isinstance(self.preprocessor, TransformPreprocessor):
            return None
        return compose_device_preprocess(self.preprocessor.transform, self.device)

    def forward_pooled(
        self, batch: Mapping[str, torch.Tensor], layers: Sequence[int], poolings: Sequence[str]
    ) -> dict[tuple[str, int], torch.Tensor]:
        self.check_request(layers, poolings)
        x = batch["pixel_values"].to(device=self.device, dtype=self.dtype, non_blocking=True)
        if not self.layout.tokens:
            x = x.contiguous(memory_format=torch.channels_last)
        wanted = sorted({int(i) for i in layers})
        block_layers = [i for i in wanted if i < self.n_blocks]

        def pool(name: str, hidden: torch.Tensor) -> torch.Tensor:
            return pool_block(name, hidden, self.layout)

        with torch.no_grad():
            if self.n_blocks not in wanted:  # blocks only: the deepest hook stops the forward pass
                capture = PooledCapture(self.blocks, block_layers, poolings, pool, extract=block_output)
                return capture.run(lambda: self.run_blocks(x))
            embedding: list[torch.Tensor] = []  # the embedding run also passes every block: one forward pass
            results: dict[tuple[str, int], torch.Tensor] = {}
            if block_layers:
                capture = PooledCapture(
                    self.blocks, block_layers, poolings, pool, stop_early=False, extract=block_output
                )
                results = capture.run(lambda: embedding.append(self.embed(x)))
            else:
                embedding.append(self.embed(x))
            for name in dict.fromkeys(poolings):
                results[(name, self.n_blocks)] = pool(name, embedding[0])
        return results


def describe_transform(transform: Any) -> list[dict[str, Any]]:
    """The steps of a torchvision ``Compose`` as plain data (op name, sizes, interpolation, mean/std...).

    Canonical: a tuple and a list of the same numbers, or two copies of one function, describe alike,
    so the feature-set id follows what the transform does, not how its config was spelled.
    """
    steps = getattr(transform, "transforms", [transform])
    described = []
    for step in steps:
        if inspect.isfunction(step) or inspect.isbuiltin(step):
            described.append({"op": getattr(step, "__qualname__", type(step).__name__)})
            continue
        fields = {k: _plain(v) for k, v in vars(step).items() if not k.startswith("_") and k != "training"}
        described.append({"op": type(step).__name__, **fields})
    return described


def _plain(value: Any) -> Any:
    """JSON-able, canonical form of a transform attribute."""
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if callable(value):
        return getattr(value, "__qualname__", type(value).__name__)
    return repr(value)
