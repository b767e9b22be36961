"""Random-weight vision towers (CLIP, SigLIP, ViT, DINOv2) and CLIP-family image-text pairs, tiny or full size."""

from __future__ import annotations

from typing import Any

from medprobe.synthetic.building import VISION, Built, byte_level_tokenizer, instantiate


def clip(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    if full:  # ViT-B/32
        config = CLIPVisionConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=32,
        )
        size = 224
    else:
        config = CLIPVisionConfig(**VISION)
        size = 32
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return Built(instantiate(CLIPVisionModel, config, device, dtype), processor)


def siglip(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    if full:  # SigLIP base patch16 224
        config = SiglipVisionConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=16,
        )
    else:
        config = SiglipVisionConfig(**VISION)
    size: Any = config.image_size
    processor = SiglipImageProcessor(size={"height": size, "width": size})
    return Built(instantiate(SiglipVisionModel, config, device, dtype), processor)


def contrastive(family: str, device: str | None, dtype: str) -> Built:
    """A tiny CLIPModel / SiglipModel (image and text towers) with a byte-level tokenizer; processor: both halves."""
    import transformers

    tokenizer = byte_level_tokenizer([])
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 64, "pad_token_id": 0, "bos_token_id": 1,
            "eos_token_id": 2}  # fmt: skip
    if family == "clip":
        config: Any = transformers.CLIPConfig(text_config=text, vision_config=dict(VISION), projection_dim=16)
        image_processor: Any = transformers.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
        model = instantiate(transformers.CLIPModel, config, device, dtype)
    else:
        config = transformers.SiglipConfig(text_config={**text, "projection_size": 32}, vision_config=dict(VISION))
        image_processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
        model = instantiate(transformers.SiglipModel, config, device, dtype)
    return Built(model, (image_processor, tokenizer))


def vit(full: bool, device: str | None, dtype: str) -> Built:
    """ViTModel (Phikon's architecture); full size is ViT-B/16 at 224 px."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(image_size=224, patch_size=16) if full else ViTConfig(**VISION)
    size: Any = config.image_size
    processor = ViTImageProcessor(size={"height": size, "width": size})
    return Built(instantiate(ViTModel, config, device, dtype), processor)


def dinov2(full: bool, device: str | None, dtype: str) -> Built:
    """Dinov2Model (RAD-DINO's architecture): BiT-style resize + centre crop; full size is ViT-B/14 at 518 px."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    if full:
        config = Dinov2Config(image_size=518, patch_size=14)
        size = 518
    else:
        config = Dinov2Config(**VISION)
        size = 32
    processor = BitImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, do_center_crop=True
    )
    return Built(instantiate(Dinov2Model, config, device, dtype), processor)


def dinov2_registers(full: bool, device: str | None, dtype: str) -> Built:
    """Dinov2WithRegistersModel: CLS + 4 register tokens before the patches."""
    from transformers import BitImageProcessor, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = Dinov2WithRegistersConfig(**VISION, num_register_tokens=4)
    size = VISION["image_size"]
    processor = BitImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, do_center_crop=True
    )
    return Built(instantiate(Dinov2WithRegistersModel, config, device, dtype), processor)
