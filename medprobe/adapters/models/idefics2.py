"""Idefics2 and Idefics3 / SmolVLM: ``<image>`` expands to fake-token-wrapped image tokens (and tiles).

SmolVLM's processor wants a video processor (torchvision) and num2words (video prompts);
:class:`SmolVLMImageOnlyProcessor` needs neither.
"""

from __future__ import annotations

from typing import Any

from transformers import ProcessorMixin
from transformers.models.smolvlm.processing_smolvlm import SmolVLMProcessor

from medprobe.adapters.models.decoder import DecoderVLMAdapter, VLMPreprocessor
from medprobe.adapters.models.registry import register_family


class Idefics2Preprocessor(VLMPreprocessor):
    """The Idefics2/3 ``User:<image>...<end_of_utterance>\\nAssistant:`` format without a chat template."""

    nested_images = True

    def plain_prompt(self, prompt: str) -> str:
        return f"User:{self.image_token}{prompt}<end_of_utterance>\nAssistant:"


@register_family("idefics2", name="idefics2")
class Idefics2Adapter(DecoderVLMAdapter):
    family = "idefics2"
    preprocessor_class = Idefics2Preprocessor
    token_refusal = "Idefics2's image tokens are perceiver latents, not positions in the image"


@register_family("idefics3", name="idefics3")
class Idefics3Adapter(DecoderVLMAdapter):
    family = "idefics3"
    preprocessor_class = Idefics2Preprocessor
    token_refusal = "Idefics3 splits an image into tiles of its own choosing; its image tokens form no one grid"


class SmolVLMImageOnlyProcessor(SmolVLMProcessor):
    """SmolVLMProcessor without the video processor (torchvision) and its num2words dependency (video only)."""

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        image_seq_len: int = 169,
        chat_template: Any = None,
        **kwargs: Any,
    ) -> None:
        self.fake_image_token = getattr(tokenizer, "fake_image_token", "<fake_token_around_image>")
        self.image_token = getattr(tokenizer, "image_token", "<image>")
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.end_of_utterance_token = getattr(tokenizer, "end_of_utterance_token", "<end_of_utterance>")
        self.global_image_token = getattr(tokenizer, "global_image_token", "<global-img>")
        self.image_seq_len = image_seq_len
        self.video_token = getattr(tokenizer, "video_token", "<video>")
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def apply_chat_template(  # type: ignore[override]  # the parent's exact overloads; same behaviour
        self, conversation: Any, chat_template: Any = None, **kwargs: Any
    ) -> Any:
        # the parent reads video-processor settings even for image-only conversations
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)


@register_family("smolvlm", name="smolvlm", processor=SmolVLMImageOnlyProcessor)
class SmolVLMAdapter(DecoderVLMAdapter):
    family = "smolvlm"
    preprocessor_class = Idefics2Preprocessor
    token_refusal = "SmolVLM splits an image into tiles of its own choosing; its image tokens form no one grid"
