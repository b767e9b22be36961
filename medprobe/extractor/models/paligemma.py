"""PaliGemma: image tokens first, then ``<bos>`` + prompt + newline; the processor's ``labels`` are dropped."""

from __future__ import annotations

from medprobe.extractor.models.decoder import DecoderVLMAdapter, VLMPreprocessor


class PaliGemmaPreprocessor(VLMPreprocessor):
    """``<image>`` + prompt; the processor expands the image tokens and adds ``<bos>`` and ``\\n``."""

    drop_keys = ("labels",)

    def plain_prompt(self, prompt: str) -> str:
        return f"{self.image_token}{prompt}"


class PaliGemmaAdapter(DecoderVLMAdapter):
    family = "paligemma"
    preprocessor_class = PaliGemmaPreprocessor
