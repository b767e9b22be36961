"""LLaVA (1.5 / next-style single image): ``<image>`` expands to one token per vision patch."""

from __future__ import annotations

from medprobe.extractor.models.decoder import DecoderVLMAdapter, VLMPreprocessor


class LlavaPreprocessor(VLMPreprocessor):
    """LLaVA-1.5 conversation format when the processor has no chat template."""

    def plain_prompt(self, prompt: str) -> str:
        return f"USER: {self.image_token}\n{prompt} ASSISTANT:"


class LlavaAdapter(DecoderVLMAdapter):
    family = "llava"
    preprocessor_class = LlavaPreprocessor
