"""PaliGemma: image tokens first, then ``<bos>`` + prompt + newline; the processor's ``labels`` are dropped."""

from __future__ import annotations

from medprobe.adapters.models.decoder import DecoderVLMAdapter, VLMPreprocessor
from medprobe.adapters.models.registry import register_family


class PaliGemmaPreprocessor(VLMPreprocessor):
    """``<image>`` + prompt; the processor expands the image tokens and adds ``<bos>`` and ``\\n``."""

    drop_keys = ("labels",)

    def plain_prompt(self, prompt: str) -> str:
        return f"{self.image_token}{prompt}"


@register_family("paligemma", name="paligemma")
class PaliGemmaAdapter(DecoderVLMAdapter):
    family = "paligemma"
    answer_token_type = 1  # the answer is PaliGemma's suffix (attended causally)
    several_images = False  # trained on one image per prompt
    preprocessor_class = PaliGemmaPreprocessor
