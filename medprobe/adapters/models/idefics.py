"""Idefics v1 (the reference study's model): one ``<image>`` placeholder; the image enters through
gated cross-attention blocks that precede the decoder blocks.

Layer ``i`` is the output of decoder block ``i`` (after gated cross-attention block
``i // cross_layer_interval`` where one precedes it), before the final norm. ``image_mean`` is the
state at the ``<image>`` placeholder token (the only sequence position that stands for the image).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image

from medprobe.adapters.models.decoder import LAYER_SEMANTICS, DecoderVLMAdapter, VLMPreprocessor
from medprobe.adapters.models.registry import register_family


class IdeficsPreprocessor(VLMPreprocessor):
    """Builds the Idefics instruct format ``["User:", image, prompt, "\\nAssistant:"]`` per sample."""

    def plain_prompt(self, prompt: str) -> str:
        return f"User:{self.image_token}{prompt}\nAssistant:"

    def run_processor(self, images: list[Image.Image], text: str) -> Mapping[str, Any]:
        head, _, tail = text.partition(self.image_token)
        samples = [[head, image, tail] if head else [image, tail] for image in images]
        return self.processor(text=samples, return_tensors="pt", padding="longest")


@register_family("idefics", name="idefics", model_class="IdeficsForVisionText2Text")
class IdeficsAdapter(DecoderVLMAdapter):
    family = "idefics"
    reuses_prompt_cache = False  # the image attention must cover every answer token
    several_images = False  # its processor wrapper here builds one image per sample
    token_refusal = "Idefics (v1) cross-attends to the image; its sequence holds no image tokens to map"
    preprocessor_class = IdeficsPreprocessor
    layer_semantics = (
        LAYER_SEMANTICS.replace("image_mean = mean over image-token positions", "image_mean = the <image> token")
        + "; block i includes the gated cross-attention that precedes it"
    )
