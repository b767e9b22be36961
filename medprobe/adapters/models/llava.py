"""LLaVA (1.5 / next-style single image): ``<image>`` expands to one token per vision patch."""

from __future__ import annotations

from medprobe.adapters.models.decoder import DecoderVLMAdapter, VLMPreprocessor
from medprobe.adapters.models.registry import register_family


class LlavaPreprocessor(VLMPreprocessor):
    """LLaVA-1.5 conversation format when the processor has no chat template."""

    def plain_prompt(self, prompt: str) -> str:
        return f"USER: {self.image_token}\n{prompt} ASSISTANT:"


@register_family("llava", name="llava")
class LlavaAdapter(DecoderVLMAdapter):
    family = "llava"
    preprocessor_class = LlavaPreprocessor
    several_images = False  # LLaVA-1.5 was trained on one image per conversation
