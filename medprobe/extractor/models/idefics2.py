"""Idefics2 and Idefics3 / SmolVLM: ``<image>`` expands to fake-token-wrapped image tokens (and tiles)."""

from __future__ import annotations

from medprobe.extractor.models.decoder import DecoderVLMAdapter, VLMPreprocessor


class Idefics2Preprocessor(VLMPreprocessor):
    """The Idefics2/3 ``User:<image>...<end_of_utterance>\\nAssistant:`` format without a chat template."""

    nested_images = True

    def plain_prompt(self, prompt: str) -> str:
        return f"User:{self.image_token}{prompt}<end_of_utterance>\nAssistant:"


class Idefics2Adapter(DecoderVLMAdapter):
    family = "idefics2"
    preprocessor_class = Idefics2Preprocessor


class Idefics3Adapter(DecoderVLMAdapter):
    family = "idefics3"
    preprocessor_class = Idefics2Preprocessor
