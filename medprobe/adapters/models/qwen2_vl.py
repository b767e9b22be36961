"""Qwen2-VL and Qwen2.5-VL: dynamic-resolution image tokens, found through ``mm_token_type_ids``.

Their processors insist on a video processor, which needs torchvision; extraction never sees
video, so :class:`Qwen2VLImageOnlyProcessor` (and the 2.5 twin) drop it and load from any
checkpoint directory without torchvision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import ProcessorMixin
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor

from medprobe.adapters.models.decoder import DecoderVLMAdapter, VLMPreprocessor
from medprobe.adapters.models.registry import register_family


def _init_image_only(
    self: Any, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any
) -> None:
    self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
    self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
    self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
        self.image_token
    )
    self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
        self.video_token
    )
    ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """Qwen2VLProcessor without the (torchvision-only) video processor."""

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any
    ) -> None:
        _init_image_only(self, image_processor, tokenizer, chat_template, **kwargs)


class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):
    """Qwen2_5_VLProcessor without the (torchvision-only) video processor."""

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any
    ) -> None:
        _init_image_only(self, image_processor, tokenizer, chat_template, **kwargs)


class QwenPreprocessor(VLMPreprocessor):
    """Vision markers around the image pad token, then the prompt (without a chat template)."""

    def plain_prompt(self, prompt: str) -> str:
        return f"{self.image_slot()}{prompt}"

    def image_slot(self) -> str:
        return f"<|vision_start|>{self.image_token}<|vision_end|>"


@register_family("qwen2_vl", name="qwen2-vl", processor=Qwen2VLImageOnlyProcessor)
class Qwen2VLAdapter(DecoderVLMAdapter):
    family = "qwen2-vl"
    preprocessor_class = QwenPreprocessor

    def image_token_grid(self, inputs: Mapping[str, torch.Tensor], n_tokens: int) -> tuple[int, int]:
        """The merged patch grid: ``image_grid_thw`` over the vision tower's spatial merge (tokens row-major)."""
        thw = inputs.get("image_grid_thw")
        merge = int(getattr(getattr(self.model.config, "vision_config", None), "spatial_merge_size", 2) or 2)
        if thw is not None and len(thw):
            t, h, w = (int(v) for v in thw[0])
            if t == 1 and (h // merge) * (w // merge) == n_tokens:
                return h // merge, w // merge
        return super().image_token_grid(inputs, n_tokens)

    def image_mask(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        types = inputs.get("mm_token_type_ids")
        if types is not None:
            return types == 1
        return super().image_mask(inputs)


@register_family("qwen2_5_vl", name="qwen2.5-vl", processor=Qwen2_5_VLImageOnlyProcessor)
class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    family = "qwen2.5-vl"
