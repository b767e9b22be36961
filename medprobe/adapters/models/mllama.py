"""Mllama (Llama 3.2 Vision): one ``<|image|>`` token in the text; the image enters by cross-attention.

The language model's block list interleaves self-attention and cross-attention blocks
(``text_config.cross_attention_layers``); layer ``i`` is block ``i`` of that list, so the layer count
is ``text_config.num_hidden_layers`` with the cross-attention blocks included. ``image_mean`` is the
state at the single ``<|image|>`` position; ``last`` is usually what to probe.
"""

from __future__ import annotations

from medprobe.adapters.models.decoder import DecoderVLMAdapter, VLMPreprocessor
from medprobe.adapters.models.registry import register_family


class MllamaPreprocessor(VLMPreprocessor):
    """Nested images; without a chat template, ``<|image|>`` then the prompt."""

    nested_images = True

    def plain_prompt(self, prompt: str) -> str:
        return f"{self.image_token}{prompt}"


@register_family("mllama", name="mllama")  # Llama 3.2 Vision
class MllamaAdapter(DecoderVLMAdapter):
    family = "mllama"
    reuses_prompt_cache = False  # the cross-attention mask must grow with the text
    several_images = False  # Llama 3.2 Vision attends to one image per prompt
    token_refusal = "Llama 3.2 Vision cross-attends to the image; its sequence holds no image tokens to map"
    preprocessor_class = MllamaPreprocessor
