"""Extra ``timm.create_model`` arguments that some pathology foundation models need beyond their ``config.json``.

Their model cards load them with keyword arguments the hub config does not carry (layer classes, init
values, register tokens); without them the weights do not fit the architecture. medprobe applies the
card's arguments for these repos, keyed by hub repo id (case-insensitive). A repo not listed here loads
with its config alone, as ``timm.create_model("hf-hub:...", pretrained=True)`` does.
"""

from __future__ import annotations

from typing import Any


def _swiglu_silu() -> dict[str, Any]:
    import torch
    from timm.layers import SwiGLUPacked

    return {"mlp_layer": SwiGLUPacked, "act_layer": torch.nn.SiLU}


def create_kwargs(repo_id: str) -> dict[str, Any]:
    """The model card's ``create_model`` keyword arguments for ``repo_id`` (empty for any other repo)."""
    repo = repo_id.lower()
    if repo == "mahmoodlab/uni":
        return {"init_values": 1e-5, "dynamic_img_size": True}
    if repo == "mahmoodlab/uni2-h":
        return {
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "num_classes": 0,
            "no_embed_class": True,
            "reg_tokens": 8,
            "dynamic_img_size": True,
            **_swiglu_silu(),
        }
    if repo in ("paige-ai/virchow", "paige-ai/virchow2"):
        return _swiglu_silu()
    if repo == "bioptimus/h-optimus-0":
        return {"init_values": 1e-5, "dynamic_img_size": False}
    return {}

