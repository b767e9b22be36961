"""On a CUDA device: bf16 adapters agree with fp32 CPU ones; full-size random models run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medprobe.adapters.loading import load_adapter

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def images(n: int = 4) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (32 + 8 * i, 40, 3), dtype=np.uint8)) for i in range(n)]


@pytest.mark.parametrize(
    "name", ["clip", "llava", "qwen2-vl", "idefics", "idefics3", "gemma3", "dinov2", "timm-vit", "open_clip-timm"]
)
def test_bf16_cuda_matches_fp32_cpu(name: str) -> None:
    cpu = load_adapter(f"tiny-random/{name}")
    gpu = load_adapter(f"tiny-random/{name}", device="cuda", dtype="bf16")
    prompt = "Describe." if cpu.identity.takes_prompt else None
    batch = cpu.preprocess(images(), prompt)
    layers = list(range(cpu.identity.n_layers))
    ref = cpu.forward_pooled(batch, layers, cpu.identity.supported_poolings)
    out = gpu.forward_pooled({k: v.pin_memory() for k, v in batch.items()}, layers, cpu.identity.supported_poolings)
    for key, value in out.items():
        assert value.device.type == "cuda" and value.dtype == torch.float32
        cos = torch.nn.functional.cosine_similarity(value.cpu(), ref[key], dim=-1)
        assert (cos > 0.99).all(), (key, cos)


@pytest.mark.parametrize("name", ["clip", "idefics", "timm-vit", "open_clip-vit"])
def test_full_size_random_models_run(name: str) -> None:
    adapter = load_adapter(f"random-full/{name}", device="cuda", dtype="bf16")
    prompt = "Describe." if adapter.identity.takes_prompt else None
    batch = adapter.preprocess(images(8), prompt)
    layers = [0, adapter.identity.n_layers - 1]
    out = adapter.forward_pooled(batch, layers, [adapter.identity.default_pooling])
    for (_, layer), value in out.items():
        assert value.shape == (8, adapter.identity.hidden_sizes[layer]) and torch.isfinite(value).all()
    del adapter
    torch.cuda.empty_cache()
