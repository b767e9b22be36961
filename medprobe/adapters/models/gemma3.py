"""Gemma 3 (MedGemma): ``<start_of_image>`` in the text expands to the image's soft tokens.

The processor wants one list of images per sample; image-token positions are the
``<image_soft_token>`` ids, which the generic decoder path already finds from the config.
"""

from __future__ import annotations

from medprobe.adapters.models.decoder import DecoderVLMAdapter, VLMPreprocessor
from medprobe.adapters.models.registry import register_family


class Gemma3Preprocessor(VLMPreprocessor):
    """Nested images; without a chat template, the Gemma turn format with ``<start_of_image>``."""

    nested_images = True

    def plain_prompt(self, prompt: str) -> str:
        boi = getattr(self.processor, "boi_token", "<start_of_image>")
        return f"<start_of_turn>user\n{boi}{prompt}<end_of_turn>\n<start_of_turn>model\n"


@register_family("gemma3", name="gemma3")  # MedGemma
class Gemma3Adapter(DecoderVLMAdapter):
    family = "gemma3"
    preprocessor_class = Gemma3Preprocessor
