"""Offline random-weight models and their processors, built in code (no hub, no files).

``tiny-random/<name>`` specs build very small models for tests and smoke runs; ``random-full/<name>``
builds full-size configurations (CLIP ViT-B/32 vision tower, an Idefics-9B-shaped VLM) for
benchmarks, where throughput does not depend on the weight values. Both go through exactly the
same adapter classes as real checkpoints, and ``save_pretrained`` of the model and processor
gives a directory that ``load_adapter`` reads like any local checkpoint.

Tokenizers are byte-level BPE models with no merges (every byte is a token) plus the special
tokens each processor needs; image processors are the classes ``AutoImageProcessor`` loads back (the
torchvision backend).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from medprobe.errors import NotFoundError

if TYPE_CHECKING:
    from medprobe.extractor.adapter import Adapter

SEED = 0
TINY_PREFIX = "tiny-random/"
FULL_PREFIX = "random-full/"

# the text model shared by the tiny decoders: 3 blocks, hidden 32, 4 heads of 8
_TEXT: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
# the vision tower shared by the tiny models: 32 px images, 8 px patches -> 16 patches
_VISION: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}


def byte_level_tokenizer(special: list[str], named: dict[str, str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges: ``<pad> <s> </s> <unk>``, then ``special``, then 256 bytes.

    ``named`` maps extra attribute names (``image_token``...) to tokens of ``special``.
    """
    base = ["<pad>", "<s>", "</s>", "<unk>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(base + special + alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in base + special])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=named or {},
        padding_side="right",
    )


def token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The id of one token of ``tokenizer``."""
    got = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(got, int):
        raise TypeError(f"{token!r} is not one token of this tokenizer: {got}")
    return got


@dataclass(frozen=True)
class Built:
    """A random-weight model and its processor (an image processor for vision towers)."""

    model: torch.nn.Module
    processor: object


def _seeded(build: Callable[[], Built]) -> Built:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return build()


def _instantiate(model_cls: Any, config: object, device: str | None = None, dtype: str = "fp32") -> torch.nn.Module:
    from medprobe.extractor.loading import torch_dtype

    with torch.device(device or "cpu"):
        model = model_cls._from_config(config, dtype=torch_dtype(dtype))
    return model.eval()


# ----------------------------------------------------------------------------- vision towers
def _clip(full: bool, device: str | None, dtype: str) -> Built:
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
        config = CLIPVisionConfig(**_VISION)
        size = 32
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return Built(_instantiate(CLIPVisionModel, config, device, dtype), processor)


def _siglip(full: bool, device: str | None, dtype: str) -> Built:
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
        config = SiglipVisionConfig(**_VISION)
    size: Any = config.image_size
    processor = SiglipImageProcessor(size={"height": size, "width": size})
    return Built(_instantiate(SiglipVisionModel, config, device, dtype), processor)


def _contrastive(family: str, device: str | None, dtype: str) -> Built:
    """A tiny CLIPModel / SiglipModel (image and text towers) with a byte-level tokenizer; processor: both halves."""
    import transformers

    tokenizer = byte_level_tokenizer([])
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 64, "pad_token_id": 0, "bos_token_id": 1,
            "eos_token_id": 2}  # fmt: skip
    if family == "clip":
        config: Any = transformers.CLIPConfig(text_config=text, vision_config=dict(_VISION), projection_dim=16)
        image_processor: Any = transformers.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
        model = _instantiate(transformers.CLIPModel, config, device, dtype)
    else:
        config = transformers.SiglipConfig(text_config={**text, "projection_size": 32}, vision_config=dict(_VISION))
        image_processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
        model = _instantiate(transformers.SiglipModel, config, device, dtype)
    return Built(model, (image_processor, tokenizer))


def _vit(full: bool, device: str | None, dtype: str) -> Built:
    """ViTModel (Phikon's architecture); full size is ViT-B/16 at 224 px."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(image_size=224, patch_size=16) if full else ViTConfig(**_VISION)
    size: Any = config.image_size
    processor = ViTImageProcessor(size={"height": size, "width": size})
    return Built(_instantiate(ViTModel, config, device, dtype), processor)


def _dinov2(full: bool, device: str | None, dtype: str) -> Built:
    """Dinov2Model (RAD-DINO's architecture): BiT-style resize + centre crop; full size is ViT-B/14 at 518 px."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    if full:
        config = Dinov2Config(image_size=518, patch_size=14)
        size = 518
    else:
        config = Dinov2Config(**_VISION)
        size = 32
    processor = BitImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, do_center_crop=True
    )
    return Built(_instantiate(Dinov2Model, config, device, dtype), processor)


def _dinov2_registers(full: bool, device: str | None, dtype: str) -> Built:
    """Dinov2WithRegistersModel: CLS + 4 register tokens before the patches."""
    from transformers import BitImageProcessor, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = Dinov2WithRegistersConfig(**_VISION, num_register_tokens=4)
    size = _VISION["image_size"]
    processor = BitImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, do_center_crop=True
    )
    return Built(_instantiate(Dinov2WithRegistersModel, config, device, dtype), processor)


# ----------------------------------------------------------------------------- decoder VLMs
def _llava(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = byte_level_tokenizer(["<image>"], {"image_token": "<image>"})
    size = _VISION["image_size"]
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        tokenizer=tokenizer,
        patch_size=_VISION["patch_size"],
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**_VISION).to_dict(),
        text_config=LlamaConfig(vocab_size=len(tokenizer), **_TEXT).to_dict(),
        image_token_index=token_id(tokenizer, "<image>"),
        image_seq_length=(size // _VISION["patch_size"]) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    return Built(_instantiate(LlavaForConditionalGeneration, config, device, dtype), processor)


def _llava_next(full: bool, device: str | None, dtype: str) -> Built:
    """LLaVA-NeXT (any-resolution tiles): no dedicated adapter, so it exercises the generic path."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tokenizer = byte_level_tokenizer(["<image>"], {"image_token": "<image>"})
    size = _VISION["image_size"]
    pinpoints = [[size, 2 * size], [2 * size, size], [2 * size, 2 * size]]
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, image_grid_pinpoints=pinpoints
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=_VISION["patch_size"],
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**_VISION).to_dict(),
        text_config=LlamaConfig(vocab_size=len(tokenizer), **_TEXT).to_dict(),
        image_token_index=token_id(tokenizer, "<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2,
    )
    return Built(_instantiate(LlavaNextForConditionalGeneration, config, device, dtype), processor)


_QWEN_SPECIAL = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|im_start|>", "<|im_end|>"]


def _qwen_tokenizer() -> PreTrainedTokenizerFast:
    return byte_level_tokenizer(_QWEN_SPECIAL, {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})


# the ChatML layout of the real Qwen2-VL template, so the tiny models exercise the chat-template path
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ item['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen_image_processor() -> Any:
    from transformers import Qwen2VLImageProcessor

    # 4 px patches merged 2x2: a 32x32 image -> 8x8 patches -> 16 image tokens
    return Qwen2VLImageProcessor(
        patch_size=4, merge_size=2, temporal_patch_size=2, min_pixels=16 * 16, max_pixels=48 * 48
    )


def _qwen_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    def ids(token: str) -> int:
        return token_id(tokenizer, token)

    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def _qwen_text(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    # head_dim 8 -> 4 rotary frequencies split over (t, h, w)
    return {
        "vocab_size": len(tokenizer),
        **_TEXT,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
    }


def _qwen2_vl(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from medprobe.extractor.models.qwen2_vl import Qwen2VLImageOnlyProcessor

    tokenizer = _qwen_tokenizer()
    processor = Qwen2VLImageOnlyProcessor(
        image_processor=_qwen_image_processor(), tokenizer=tokenizer, chat_template=QWEN_CHAT_TEMPLATE
    )
    vision = {
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": 32,
        "num_heads": 4,
        "mlp_ratio": 2,
        "patch_size": 4,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    config = Qwen2VLConfig(text_config=_qwen_text(tokenizer), vision_config=vision, **_qwen_ids(tokenizer))
    return Built(_instantiate(Qwen2VLForConditionalGeneration, config, device, dtype), processor)


def _qwen2_5_vl(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from medprobe.extractor.models.qwen2_vl import Qwen2_5_VLImageOnlyProcessor

    tokenizer = _qwen_tokenizer()
    processor = Qwen2_5_VLImageOnlyProcessor(
        image_processor=_qwen_image_processor(), tokenizer=tokenizer, chat_template=QWEN_CHAT_TEMPLATE
    )
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 4,
        "out_hidden_size": 32,
        "patch_size": 4,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 16,
        "fullatt_block_indexes": [1],
    }
    config = Qwen2_5_VLConfig(text_config=_qwen_text(tokenizer), vision_config=vision, **_qwen_ids(tokenizer))
    return Built(_instantiate(Qwen2_5_VLForConditionalGeneration, config, device, dtype), processor)


def _paligemma(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    tokenizer = byte_level_tokenizer(["<image>"], {"image_token": "<image>"})
    size = _VISION["image_size"]
    n_image = (size // _VISION["patch_size"]) ** 2
    image_processor = SiglipImageProcessor(size={"height": size, "width": size})
    image_processor.image_seq_length = n_image  # type: ignore[attr-defined]  # read by PaliGemmaProcessor
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)  # adds loc/seg tokens
    vision = SiglipVisionConfig(**{**_VISION, "projection_dim": _TEXT["hidden_size"]}).to_dict()
    text = GemmaConfig(vocab_size=len(tokenizer), head_dim=8, **_TEXT).to_dict()
    config = PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=token_id(tokenizer, "<image>"),
        vocab_size=len(tokenizer),
        projection_dim=_TEXT["hidden_size"],
        hidden_size=_TEXT["hidden_size"],
    )
    return Built(_instantiate(PaliGemmaForConditionalGeneration, config, device, dtype), processor)


_IDEFICS_SPECIAL = ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]


def _idefics(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import IdeficsConfig, IdeficsForVisionText2Text, IdeficsImageProcessor, IdeficsProcessor

    tokenizer = byte_level_tokenizer(_IDEFICS_SPECIAL, {"image_token": "<image>"})
    if full:  # Idefics-9B: LLaMA-7B text model, ViT-H/14 vision tower, perceiver resampler, xattn every 4
        size = 224
        config = IdeficsConfig(
            vocab_size=32000,
            additional_vocab_size=2,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            cross_layer_interval=4,
            use_resampler=True,
            vision_config={
                "embed_dim": 1280,
                "image_size": size,
                "intermediate_size": 5120,
                "patch_size": 14,
                "num_hidden_layers": 32,
                "num_attention_heads": 16,
            },
            perceiver_config={
                "use_resampler": True,
                "resampler_n_latents": 64,
                "resampler_depth": 6,
                "resampler_n_heads": 16,
                "resampler_head_dim": 96,
            },
        )
    else:
        size = _VISION["image_size"]
        config = IdeficsConfig(
            vocab_size=len(tokenizer),
            additional_vocab_size=0,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            cross_layer_interval=1,
            use_resampler=True,
            # random non-zero gates so the image reaches the text through cross-attention
            alpha_initializer="normal",
            alpha_type="vector",
            alphas_initializer_range=1.0,
            vision_config={
                "embed_dim": 32,
                "image_size": size,
                "intermediate_size": 64,
                "patch_size": 8,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
            },
            perceiver_config={
                "use_resampler": True,
                "resampler_n_latents": 4,
                "resampler_depth": 1,
                "resampler_n_heads": 2,
                "resampler_head_dim": 8,
            },
        )
    image_processor = IdeficsImageProcessor(image_size=size)
    processor = IdeficsProcessor(image_processor=image_processor, tokenizer=tokenizer, image_size=size)
    return Built(_instantiate(IdeficsForVisionText2Text, config, device, dtype), processor)


def _idefics2(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import (
        Idefics2Config,
        Idefics2ForConditionalGeneration,
        Idefics2ImageProcessor,
        Idefics2Processor,
        MistralConfig,
    )

    tokenizer = byte_level_tokenizer(
        _IDEFICS_SPECIAL, {"image_token": "<image>", "image_boundary_token": "<fake_token_around_image>"}
    )
    n_latents = 4
    size = _VISION["image_size"]
    image_processor = Idefics2ImageProcessor(
        do_image_splitting=False, size={"shortest_edge": size, "longest_edge": size}
    )
    processor = Idefics2Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=n_latents)
    config = Idefics2Config(
        vision_config={k: v for k, v in _VISION.items()},
        perceiver_config={
            "hidden_size": 32,
            "resampler_n_latents": n_latents,
            "resampler_depth": 1,
            "resampler_n_heads": 2,
            "resampler_head_dim": 8,
            "num_key_value_heads": 1,
        },
        text_config=MistralConfig(vocab_size=len(tokenizer), **_TEXT).to_dict(),
        image_token_id=token_id(tokenizer, "<image>"),
    )
    return Built(_instantiate(Idefics2ForConditionalGeneration, config, device, dtype), processor)


def _idefics3(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        LlamaConfig,
    )

    tokenizer = byte_level_tokenizer([*_IDEFICS_SPECIAL, "<global-img>"], {"image_token": "<image>"})
    size = _VISION["image_size"]
    # 16 patches of 8 px, pixel-shuffled by 2 -> 4 tokens per (sub-)image; images up to 64 px split in 32 px tiles
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=True, size={"longest_edge": 2 * size}, max_image_size={"longest_edge": size}
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4)
    config = Idefics3Config(
        vision_config={k: v for k, v in _VISION.items()},
        text_config=LlamaConfig(vocab_size=len(tokenizer), **_TEXT).to_dict(),
        image_token_id=token_id(tokenizer, "<image>"),
        scale_factor=2,
    )
    return Built(_instantiate(Idefics3ForConditionalGeneration, config, device, dtype), processor)


# the layout of SmolVLM's own template (ChatML-like turns, image before the text)
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>"
    "{% else %}{{ item['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _smolvlm(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import LlamaConfig, SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessor

    from medprobe.extractor.models.idefics2 import SmolVLMImageOnlyProcessor

    tokenizer = byte_level_tokenizer([*_IDEFICS_SPECIAL, "<global-img>", "<|im_start|>"], {"image_token": "<image>"})
    size = _VISION["image_size"]
    image_processor = SmolVLMImageProcessor(
        do_image_splitting=True, size={"longest_edge": 2 * size}, max_image_size={"longest_edge": size}
    )
    processor = SmolVLMImageOnlyProcessor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4, chat_template=SMOLVLM_CHAT_TEMPLATE
    )
    config = SmolVLMConfig(
        vision_config=dict(_VISION),
        text_config=LlamaConfig(vocab_size=len(tokenizer), **_TEXT).to_dict(),
        image_token_id=token_id(tokenizer, "<image>"),
        scale_factor=2,
    )
    return Built(_instantiate(SmolVLMForConditionalGeneration, config, device, dtype), processor)


# the layout of Gemma 3's own template (turns, then <start_of_image> where the image goes)
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<start_of_image>"
    "{% else %}{{ item['text'] }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _gemma3(full: bool, device: str | None, dtype: str) -> Built:
    """Gemma 3 (MedGemma's architecture): SigLIP tower, 4 soft tokens per image, Gemma 3 text model."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    special = ["<start_of_image>", "<end_of_image>", "<image_soft_token>", "<start_of_turn>", "<end_of_turn>"]
    tokenizer = byte_level_tokenizer(
        special, {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
    )
    size = _VISION["image_size"]
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": size, "width": size}),
        tokenizer=tokenizer,
        image_seq_length=4,
        chat_template=GEMMA3_CHAT_TEMPLATE,
    )
    # local (sliding) blocks then a global one, as in Gemma 3 (5:1 there); the window is 8 tokens
    layer_types = ["sliding_attention", "sliding_attention", "full_attention"]
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer), head_dim=8, sliding_window=8, layer_types=layer_types, **_TEXT
    ).to_dict()
    config = Gemma3Config(
        text_config=text,
        vision_config=SiglipVisionConfig(**_VISION).to_dict(),
        mm_tokens_per_image=4,  # 4 x 4 patches pooled to 2 x 2
        boi_token_index=token_id(tokenizer, "<start_of_image>"),
        eoi_token_index=token_id(tokenizer, "<end_of_image>"),
        image_token_index=token_id(tokenizer, "<image_soft_token>"),
    )
    model = _instantiate(Gemma3ForConditionalGeneration, config, device, dtype)
    with torch.no_grad():  # the projection starts at 0: give it weights so the image reaches the text
        projector: Any = model.get_submodule("model.multi_modal_projector")
        projector.mm_input_projection_weight.normal_(std=0.5)
    return Built(model, processor)


def _mllama(full: bool, device: str | None, dtype: str) -> Built:
    """Mllama (Llama 3.2 Vision): tiled vision encoder, cross-attention block 1 of 3 in the text model."""
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessor,
        MllamaProcessor,
        MllamaTextConfig,
        MllamaVisionConfig,
    )

    tokenizer = byte_level_tokenizer(["<|image|>", "<|python_tag|>"], {"image_token": "<|image|>"})
    size = _VISION["image_size"]
    processor = MllamaProcessor(
        image_processor=MllamaImageProcessor(size={"height": size, "width": size}, max_image_tiles=2),
        tokenizer=tokenizer,
    )
    vision = MllamaVisionConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_global_layers=1,
        attention_heads=4,
        intermediate_size=64,
        vision_output_dim=64,  # hidden x (1 intermediate layer + the last)
        image_size=size,
        patch_size=8,
        max_num_tiles=2,
        intermediate_layers_indices=[0],
        supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]],
    )
    text = MllamaTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        cross_attention_layers=[1],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = MllamaConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=token_id(tokenizer, "<|image|>")
    )
    model = _instantiate(MllamaForConditionalGeneration, config, device, dtype)
    with torch.no_grad():  # the cross-attention gates start at 0: open them so the image reaches the text
        for name, param in model.named_parameters():
            if "cross_attn" in name and name.endswith("_gate"):
                param.fill_(1.0)
    return Built(model, processor)


def _llava_onevision(full: bool, device: str | None, dtype: str) -> Built:
    """LLaVA-OneVision: SigLIP tower, any-resolution tiles, Qwen2 text model (the generic decoder path)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    tokenizer = byte_level_tokenizer(["<image>", "<video>"], {"image_token": "<image>", "video_token": "<video>"})
    size = _VISION["image_size"]
    pinpoints = [[size, 2 * size], [2 * size, size], [2 * size, 2 * size]]
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size={"height": size, "width": size}, image_grid_pinpoints=pinpoints
        ),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=(size // _VISION["patch_size"]) ** 2,
        vision_feature_select_strategy="full",
    )
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**_VISION).to_dict(),
        text_config=Qwen2Config(vocab_size=len(tokenizer), **_TEXT).to_dict(),
        image_token_index=token_id(tokenizer, "<image>"),
        video_token_index=token_id(tokenizer, "<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    return Built(_instantiate(LlavaOnevisionForConditionalGeneration, config, device, dtype), processor)


def _internvl(full: bool, device: str | None, dtype: str) -> Built:
    """InternVL 3: InternViT tower, up to 3 tiles of 4 tokens (pixel shuffle 0.5), Qwen2 text model."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
        Qwen2Config,
    )

    tokenizer = byte_level_tokenizer(
        ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
        {
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    size = _VISION["image_size"]
    image_processor = GotOcr2ImageProcessor(
        size={"height": size, "width": size}, crop_to_patches=True, min_patches=1, max_patches=3
    )
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(),
        image_seq_length=4,
    )
    vision = InternVLVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=size, patch_size=8
    )
    config = InternVLConfig(
        vision_config=vision.to_dict(),
        text_config=Qwen2Config(vocab_size=len(tokenizer), **_TEXT).to_dict(),
        image_token_id=token_id(tokenizer, "<IMG_CONTEXT>"),
        image_seq_length=4,
        downsample_ratio=0.5,
    )
    return Built(_instantiate(InternVLForConditionalGeneration, config, device, dtype), processor)


TINY_BUILDERS: dict[str, Callable[[bool, str | None, str], Built]] = {
    "clip": _clip,
    "siglip": _siglip,
    "vit": _vit,
    "dinov2": _dinov2,
    "dinov2-registers": _dinov2_registers,
    "llava": _llava,
    "llava-next": _llava_next,
    "qwen2-vl": _qwen2_vl,
    "qwen2.5-vl": _qwen2_5_vl,
    "paligemma": _paligemma,
    "idefics": _idefics,
    "idefics2": _idefics2,
    "idefics3": _idefics3,
    "smolvlm": _smolvlm,
    "gemma3": _gemma3,
    "mllama": _mllama,
    "llava-onevision": _llava_onevision,
    "internvl": _internvl,
}
FULL_SIZE = {
    "clip": "CLIP ViT-B/32 vision tower",
    "siglip": "SigLIP-B/16 vision tower",
    "vit": "ViT-B/16 (Phikon's shape)",
    "dinov2": "DINOv2 ViT-B/14 at 518 px (RAD-DINO's shape)",
    "idefics": "Idefics-9B",
}


def random_from_config(name: str, *, full_size: bool = False, device: str | None = None, dtype: str = "fp32") -> Built:
    """Build the random-weight model ``name`` (seeded) and its processor, without touching any file.

    ``full_size`` builds the real architecture's dimensions (``clip``: ViT-B/32, ``siglip``: B/16,
    ``idefics``: Idefics-9B); pass ``device="meta"`` to check construction without memory, or a CUDA
    device to build a benchmark model directly on the GPU in ``dtype``.
    """
    table = FULL_SIZE if full_size else TINY_BUILDERS
    if name not in table:
        kind = "full-size" if full_size else "tiny"
        raise NotFoundError(f"no {kind} random model {name!r}; choose from {', '.join(sorted(table))}")
    builder = TINY_BUILDERS[name]
    return _seeded(lambda: builder(full_size, device, dtype))


def random_encoder(name: str, *, full_size: bool = False, device: str | None = None, dtype: str = "fp32") -> Any:
    """Build the random timm / open_clip encoder ``name`` (seeded): an ``encoders.EncoderBuild``."""
    from medprobe.extractor.loading import torch_dtype
    from medprobe.synthetic.encoders import FULL_ENCODERS, TINY_ENCODERS, build_encoder

    table = FULL_ENCODERS if full_size else TINY_ENCODERS
    if name not in table:
        kind = "full-size" if full_size else "tiny"
        raise NotFoundError(f"no {kind} random encoder {name!r}; choose from {', '.join(sorted(table))}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return build_encoder(name, full_size=full_size, device=device or "cpu", dtype=torch_dtype(dtype))


# image-text models for zero-shot: saved with both processor halves (image processor and tokenizer)
CONTRASTIVE = ("clip-contrastive", "siglip-contrastive")


def random_contrastive(name: str, *, device: str | None = None, dtype: str = "fp32") -> Built:
    """Build ``clip-contrastive`` or ``siglip-contrastive`` (seeded): processor = (image processor, tokenizer)."""
    if name not in CONTRASTIVE:
        raise NotFoundError(f"no random image-text model {name!r}; choose from {', '.join(CONTRASTIVE)}")
    return _seeded(lambda: _contrastive(name.split("-")[0], device, dtype))


def spec_names() -> list[str]:
    """Every model spec this module can build (``tiny-random/*`` and ``random-full/*``)."""
    from medprobe.synthetic.encoders import FULL_ENCODERS, TINY_ENCODERS

    tiny = [*TINY_BUILDERS, *TINY_ENCODERS, *CONTRASTIVE]
    full = [*FULL_SIZE, *FULL_ENCODERS]
    return [TINY_PREFIX + n for n in tiny] + [FULL_PREFIX + n for n in full]


def _split_spec(spec: str) -> tuple[str, bool]:
    full = spec.startswith(FULL_PREFIX)
    return spec.removeprefix(FULL_PREFIX if full else TINY_PREFIX), full


def _is_encoder(name: str) -> bool:
    from medprobe.synthetic.encoders import FULL_ENCODERS, TINY_ENCODERS

    return name in TINY_ENCODERS or name in FULL_ENCODERS


def load_random(spec: str, *, device: str = "cpu", dtype: str = "fp32") -> Adapter:
    """Load ``tiny-random/<name>`` or ``random-full/<name>`` through the same adapter code as a real checkpoint.

    Registered under the ``medprobe.model_families`` entry-point group, so ``load_adapter`` finds it by prefix.
    """
    from medprobe.extractor.loading import adapter_from_model
    from medprobe.extractor.models.base import sha256_of_state

    name, full = _split_spec(spec)
    # a full-size model is too large to hash: its revision names the recipe instead
    recipe = f"random-init:{name}:seed={SEED}:torch={torch.__version__}" if full else None
    if _is_encoder(name):
        encoder = random_encoder(name, full_size=full, device=device, dtype=dtype)
        return encoder.adapter(spec, recipe or "sha256:" + sha256_of_state(encoder.model))
    if name in CONTRASTIVE and not full:  # the image side; zero-shot loads the saved directory (text tower too)
        from medprobe.extractor.contrastive import HFContrastiveAdapter

        pair = random_contrastive(name, device=device, dtype=dtype)
        image_processor: Any = pair.processor[0]  # type: ignore[index]
        return HFContrastiveAdapter(pair.model, image_processor, family=name.split("-")[0], model_id=spec,
                                    revision="sha256:" + sha256_of_state(pair.model))  # fmt: skip
    built = random_from_config(name, full_size=full, device=device, dtype=dtype)
    return adapter_from_model(built.model, built.processor, model_id=spec, revision=recipe)


def save_random(spec: str, directory: str | Path) -> Path:
    """Write the random model ``spec`` to ``directory`` in its hub layout (what a download leaves).

    Transformers models: ``save_pretrained`` of model and processor; timm: ``config.json`` +
    ``model.safetensors``; open_clip: ``open_clip_config.json`` + ``open_clip_model.safetensors``.
    """
    name, full = _split_spec(spec)
    path = Path(directory)
    if _is_encoder(name):
        return random_encoder(name, full_size=full).save(path)
    built = random_contrastive(name) if name in CONTRASTIVE else random_from_config(name, full_size=full)
    model: Any = built.model
    model.save_pretrained(path)
    parts: Any = built.processor if isinstance(built.processor, tuple) else (built.processor,)
    for part in parts:
        part.save_pretrained(path)
    return path
