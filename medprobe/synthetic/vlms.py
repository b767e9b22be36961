"""Random-weight decoder VLMs (LLaVA, Qwen2-VL, PaliGemma, Idefics 1-3, SmolVLM, Gemma 3, Mllama, LLaVA-OneVision,
InternVL) with their processors and chat templates, tiny or full size."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedTokenizerFast

from medprobe.synthetic.building import TEXT, VISION, Built, byte_level_tokenizer, instantiate, token_id


def llava(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = byte_level_tokenizer(["<image>"], {"image_token": "<image>"})
    size = VISION["image_size"]
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        tokenizer=tokenizer,
        patch_size=VISION["patch_size"],
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION).to_dict(),
        text_config=LlamaConfig(vocab_size=len(tokenizer), **TEXT).to_dict(),
        image_token_index=token_id(tokenizer, "<image>"),
        image_seq_length=(size // VISION["patch_size"]) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    return Built(instantiate(LlavaForConditionalGeneration, config, device, dtype), processor)


def llava_next(full: bool, device: str | None, dtype: str) -> Built:
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
    size = VISION["image_size"]
    pinpoints = [[size, 2 * size], [2 * size, size], [2 * size, 2 * size]]
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, image_grid_pinpoints=pinpoints
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=VISION["patch_size"],
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**VISION).to_dict(),
        text_config=LlamaConfig(vocab_size=len(tokenizer), **TEXT).to_dict(),
        image_token_index=token_id(tokenizer, "<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2,
    )
    return Built(instantiate(LlavaNextForConditionalGeneration, config, device, dtype), processor)


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
        **TEXT,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
    }


def qwen2_vl(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from medprobe.adapters.models.qwen2_vl import Qwen2VLImageOnlyProcessor

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
    return Built(instantiate(Qwen2VLForConditionalGeneration, config, device, dtype), processor)


def qwen2_5_vl(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from medprobe.adapters.models.qwen2_vl import Qwen2_5_VLImageOnlyProcessor

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
    return Built(instantiate(Qwen2_5_VLForConditionalGeneration, config, device, dtype), processor)


def paligemma(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    tokenizer = byte_level_tokenizer(["<image>"], {"image_token": "<image>"})
    size = VISION["image_size"]
    n_image = (size // VISION["patch_size"]) ** 2
    image_processor = SiglipImageProcessor(size={"height": size, "width": size})
    image_processor.image_seq_length = n_image  # type: ignore[attr-defined]  # read by PaliGemmaProcessor
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)  # adds loc/seg tokens
    vision = SiglipVisionConfig(**{**VISION, "projection_dim": TEXT["hidden_size"]}).to_dict()
    text = GemmaConfig(vocab_size=len(tokenizer), head_dim=8, **TEXT).to_dict()
    config = PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=token_id(tokenizer, "<image>"),
        vocab_size=len(tokenizer),
        projection_dim=TEXT["hidden_size"],
        hidden_size=TEXT["hidden_size"],
    )
    return Built(instantiate(PaliGemmaForConditionalGeneration, config, device, dtype), processor)


_IDEFICS_SPECIAL = ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]


def idefics(full: bool, device: str | None, dtype: str) -> Built:
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
        size = VISION["image_size"]
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
    return Built(instantiate(IdeficsForVisionText2Text, config, device, dtype), processor)


def idefics2(full: bool, device: str | None, dtype: str) -> Built:
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
    size = VISION["image_size"]
    image_processor = Idefics2ImageProcessor(
        do_image_splitting=False, size={"shortest_edge": size, "longest_edge": size}
    )
    processor = Idefics2Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=n_latents)
    config = Idefics2Config(
        vision_config={k: v for k, v in VISION.items()},
        perceiver_config={
            "hidden_size": 32,
            "resampler_n_latents": n_latents,
            "resampler_depth": 1,
            "resampler_n_heads": 2,
            "resampler_head_dim": 8,
            "num_key_value_heads": 1,
        },
        text_config=MistralConfig(vocab_size=len(tokenizer), **TEXT).to_dict(),
        image_token_id=token_id(tokenizer, "<image>"),
    )
    return Built(instantiate(Idefics2ForConditionalGeneration, config, device, dtype), processor)


def idefics3(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        LlamaConfig,
    )

    tokenizer = byte_level_tokenizer([*_IDEFICS_SPECIAL, "<global-img>"], {"image_token": "<image>"})
    size = VISION["image_size"]
    # 16 patches of 8 px, pixel-shuffled by 2 -> 4 tokens per (sub-)image; images up to 64 px split in 32 px tiles
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=True, size={"longest_edge": 2 * size}, max_image_size={"longest_edge": size}
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4)
    config = Idefics3Config(
        vision_config={k: v for k, v in VISION.items()},
        text_config=LlamaConfig(vocab_size=len(tokenizer), **TEXT).to_dict(),
        image_token_id=token_id(tokenizer, "<image>"),
        scale_factor=2,
    )
    return Built(instantiate(Idefics3ForConditionalGeneration, config, device, dtype), processor)


# the layout of SmolVLM's own template (ChatML-like turns, image before the text)
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>"
    "{% else %}{{ item['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def smolvlm(full: bool, device: str | None, dtype: str) -> Built:
    from transformers import LlamaConfig, SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessor

    from medprobe.adapters.models.idefics2 import SmolVLMImageOnlyProcessor

    tokenizer = byte_level_tokenizer([*_IDEFICS_SPECIAL, "<global-img>", "<|im_start|>"], {"image_token": "<image>"})
    size = VISION["image_size"]
    image_processor = SmolVLMImageProcessor(
        do_image_splitting=True, size={"longest_edge": 2 * size}, max_image_size={"longest_edge": size}
    )
    processor = SmolVLMImageOnlyProcessor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4, chat_template=SMOLVLM_CHAT_TEMPLATE
    )
    config = SmolVLMConfig(
        vision_config=dict(VISION),
        text_config=LlamaConfig(vocab_size=len(tokenizer), **TEXT).to_dict(),
        image_token_id=token_id(tokenizer, "<image>"),
        scale_factor=2,
    )
    return Built(instantiate(SmolVLMForConditionalGeneration, config, device, dtype), processor)


# the layout of Gemma 3's own template (turns, then <start_of_image> where the image goes)
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<start_of_image>"
    "{% else %}{{ item['text'] }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def gemma3(full: bool, device: str | None, dtype: str) -> Built:
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
    size = VISION["image_size"]
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": size, "width": size}),
        tokenizer=tokenizer,
        image_seq_length=4,
        chat_template=GEMMA3_CHAT_TEMPLATE,
    )
    # local (sliding) blocks then a global one, as in Gemma 3 (5:1 there); the window is 8 tokens
    layer_types = ["sliding_attention", "sliding_attention", "full_attention"]
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer), head_dim=8, sliding_window=8, layer_types=layer_types, **TEXT
    ).to_dict()
    config = Gemma3Config(
        text_config=text,
        vision_config=SiglipVisionConfig(**VISION).to_dict(),
        mm_tokens_per_image=4,  # 4 x 4 patches pooled to 2 x 2
        boi_token_index=token_id(tokenizer, "<start_of_image>"),
        eoi_token_index=token_id(tokenizer, "<end_of_image>"),
        image_token_index=token_id(tokenizer, "<image_soft_token>"),
    )
    model = instantiate(Gemma3ForConditionalGeneration, config, device, dtype)
    with torch.no_grad():  # the projection starts at 0: give it weights so the image reaches the text
        projector: Any = model.get_submodule("model.multi_modal_projector")
        projector.mm_input_projection_weight.normal_(std=0.5)
    return Built(model, processor)


def mllama(full: bool, device: str | None, dtype: str) -> Built:
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
    size = VISION["image_size"]
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
    model = instantiate(MllamaForConditionalGeneration, config, device, dtype)
    with torch.no_grad():  # the cross-attention gates start at 0: open them so the image reaches the text
        for name, param in model.named_parameters():
            if "cross_attn" in name and name.endswith("_gate"):
                param.fill_(1.0)
    return Built(model, processor)


def llava_onevision(full: bool, device: str | None, dtype: str) -> Built:
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
    size = VISION["image_size"]
    pinpoints = [[size, 2 * size], [2 * size, size], [2 * size, 2 * size]]
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size={"height": size, "width": size}, image_grid_pinpoints=pinpoints
        ),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=(size // VISION["patch_size"]) ** 2,
        vision_feature_select_strategy="full",
    )
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**VISION).to_dict(),
        text_config=Qwen2Config(vocab_size=len(tokenizer), **TEXT).to_dict(),
        image_token_index=token_id(tokenizer, "<image>"),
        video_token_index=token_id(tokenizer, "<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    return Built(instantiate(LlavaOnevisionForConditionalGeneration, config, device, dtype), processor)


def internvl(full: bool, device: str | None, dtype: str) -> Built:
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
    size = VISION["image_size"]
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
        text_config=Qwen2Config(vocab_size=len(tokenizer), **TEXT).to_dict(),
        image_token_id=token_id(tokenizer, "<IMG_CONTEXT>"),
        image_seq_length=4,
        downsample_ratio=0.5,
    )
    return Built(instantiate(InternVLForConditionalGeneration, config, device, dtype), processor)
