"""Decoder VLMs (image-text-to-text): hooks on the language model's blocks, token poolings.

Layer ``i`` is the output of decoder block ``i`` of the language model, before the final norm.
It equals ``output_hidden_states[i + 1]`` for ``i < n_layers - 1``; for the last block,
``output_hidden_states[-1]`` is after the final norm while layer ``n_layers - 1`` is before it.

This module holds the generic path (any model whose decoder stack ``find_layer_list`` finds);
the per-family modules override only prompt formatting and image-token positions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from PIL import Image
from torch import nn
from transformers import PreTrainedModel

from medprobe.adapters.adapter import Adapter, Capability, ModelIdentity, Preprocessor
from medprobe.adapters.models.base import (
    compute_dtype,
    find_layer_list,
    input_device,
    move_batch,
    text_config,
)
from medprobe.adapters.models.capture import PooledCapture
from medprobe.adapters.models.pooling import TokenMasks, image_tokens, pool_tokens
from medprobe.adapters.models.tokens import TOKENS, TokenGrid, square_grid
from medprobe.adapters.models.vision_tower import to_rgb
from medprobe.adapters.prompts import apply_chat_template, interleaved_messages
from medprobe.errors import InvalidInputError
from medprobe.featurestore import config_json

LAYER_SEMANTICS = (
    "layer i = output of language-model decoder block i (residual stream, before the final norm) = "
    "output_hidden_states[i+1] for i < n_layers-1; last = last non-pad token, mean = mean over "
    "non-pad tokens, image_mean = mean over image-token positions"
)
POOLINGS = ("last", "image_mean", "mean")
# families served by the generic adapter whose image tokens are tiles of a size they choose (anyres, dynamic tiling)
TILED = frozenset({"llava_next", "llava_onevision", "internvl", "internvl_chat"})


class VLMPreprocessor(Preprocessor):
    """Image + prompt -> processor tensors, right-padded, with per-family prompt formatting."""

    #: images go to the processor as ``[[img], [img], ...]`` (one list per sample)
    nested_images: ClassVar[bool] = False
    #: keys the processor returns that the model's forward must not get
    drop_keys: ClassVar[tuple[str, ...]] = ("labels",)

    def __init__(self, processor: Any, *, image_token: str, use_chat_template: bool = True) -> None:
        self.processor = processor
        self.image_token = image_token
        self.use_chat_template = use_chat_template and bool(getattr(processor, "chat_template", None))
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is not None:
            # right padding keeps every real token at the position it has when run alone
            tokenizer.padding_side = "right"

    def plain_prompt(self, prompt: str) -> str:
        """The text when the processor has no chat template: the image placeholder, then the prompt."""
        return f"{self.image_token}{prompt}"

    def format_prompt(self, prompt: str | None, *, thinking: bool = False) -> str:
        """The processor's text for ``prompt``: its chat template (``thinking``: with the template's own thinking
        switch on), else the family's plain format."""
        if prompt is None:
            raise InvalidInputError("this model takes a prompt: pass --prompt TEXT or --prompt-preset NAME")
        if self.use_chat_template:
            return str(apply_chat_template(self.processor, prompt, thinking=thinking))
        return self.plain_prompt(prompt)

    def run_processor(self, images: list[Image.Image], text: str) -> Mapping[str, Any]:
        batch_images: list = [[im] for im in images] if self.nested_images else images
        return self.processor(images=batch_images, text=[text] * len(images), return_tensors="pt", padding="longest")

    def image_slot(self) -> str:
        """What one image is in a prompt without a chat template."""
        return self.image_token

    def format_interleaved(self, segments: list[tuple[int, str]], *, thinking: bool = False) -> str:
        """The prompt of several images interleaved with text: ``(number of images, text)`` per segment, each
        segment's images before its text. The chat template places them; without one, the family's plain format
        with one image slot per image, where it has the slot right before the prompt text."""
        if self.use_chat_template:
            extra = {"enable_thinking": True} if thinking else {}
            rendered = self.processor.apply_chat_template(interleaved_messages(segments), add_generation_prompt=True,
                                                          tokenize=False, **extra)  # fmt: skip
            return str(rendered)
        marker = "\x00prompt\x00"
        template = self.plain_prompt(marker)
        slot = self.image_slot()
        if slot + marker not in template:
            raise InvalidInputError(f"{type(self).__name__} has no chat template and its plain prompt cannot place "
                                    "several images; use a checkpoint whose processor has a chat template")  # fmt: skip
        body = "".join(slot * n + text for n, text in segments)
        return template.replace(slot + marker, body)

    def run_processor_sample(self, images: list[Image.Image], text: str, copies: int) -> Mapping[str, Any]:
        """``copies`` identical rows of one prompt that shows several images, in order."""
        batch_images: list = [list(images)] * copies if self.nested_images else list(images) * copies
        return self.processor(images=batch_images, text=[text] * copies, return_tensors="pt", padding="longest")

    def __call__(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, torch.Tensor]:
        if not images:
            raise InvalidInputError("preprocess got an empty batch of images")
        out = self.run_processor(to_rgb(images), self.format_prompt(prompt))
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor) and k not in self.drop_keys}

    def describe(self) -> dict[str, Any]:
        """What of the processor changes the numbers (for the feature-set key)."""
        processor = self.processor
        tokenizer = getattr(processor, "tokenizer", None)
        image_processor = getattr(processor, "image_processor", None)
        return {
            "processor": type(processor).__name__,
            "image_processor": image_processor.to_dict() if image_processor is not None else None,
            # the class too: the PIL and torchvision backends of one processor give different pixels
            "image_processor_class": type(image_processor).__name__ if image_processor is not None else None,
            "tokenizer": type(tokenizer).__name__ if tokenizer is not None else None,
            "vocab_size": len(tokenizer) if tokenizer is not None else None,
            "chat_template": getattr(processor, "chat_template", None) if self.use_chat_template else None,
            "padding_side": "right",
            "prompt_format": type(self).__name__,
        }


class DecoderVLMAdapter(Adapter):
    """Generic image-text-to-text model: hooks on the language model's decoder blocks."""

    family: ClassVar[str] = "image-text-to-text"
    preprocessor_class: ClassVar[type[VLMPreprocessor]] = VLMPreprocessor
    layer_semantics: ClassVar[str] = LAYER_SEMANTICS
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.pooled_features, Capability.option_scoring})
    reuses_prompt_cache: ClassVar[bool] = True  # except Idefics (v1) and Mllama (cross-attention to the image)
    #: takes several images in one prompt (VQA items with several images, ``--shots-with-images``); families trained
    #: on one image per prompt say False and such items are refused
    several_images: ClassVar[bool] = True
    #: image tokens in the sequence form one fixed row-major grid (square unless :meth:`image_token_grid` says);
    #: families where they do not say why here
    token_refusal: ClassVar[str | None] = None

    def __init__(self, model: PreTrainedModel, processor: Any, *, model_id: str, revision: str):
        self.model = model.eval()
        config = model.config
        n_layers = text_config(config).num_hidden_layers
        self.layer_path, self.layer_modules = find_layer_list(model, n_layers, prefer=("language_model", "text"))
        self.image_token_id = self.find_image_token_id(config, processor)
        image_token = processor.tokenizer.convert_ids_to_tokens(self.image_token_id)
        self.preprocessor = self.preprocessor_class(processor, image_token=image_token)
        self.device = input_device(model)
        self.dtype = compute_dtype(model)
        hidden = text_config(config).hidden_size
        self.identity = ModelIdentity(
            model_id=model_id,
            model_revision=revision,
            adapter=self.family,
            preprocessing=config_json(self.preprocessor.describe()),
            layer_semantics=self.layer_semantics,
            n_layers=n_layers,
            hidden_sizes=(hidden,) * n_layers,
            supported_poolings=POOLINGS,
            default_pooling="last",
            takes_prompt=True,
            extra={
                "model_class": type(model).__name__,
                "layer_path": self.layer_path,
                "image_token_id": self.image_token_id,
            },
        )

    # ---------------------------------------------------------------- per-family hooks
    @staticmethod
    def find_image_token_id(config: Any, processor: Any) -> int:
        """The id of the image placeholder token: the config's, else the processor's."""
        for owner, attr in ((config, "image_token_id"), (config, "image_token_index"), (processor, "image_token_id")):
            value = getattr(owner, attr, None)
            if isinstance(value, int):
                return value
        tokenizer = getattr(processor, "tokenizer", None)
        token = getattr(processor, "image_token", None) or getattr(tokenizer, "image_token", None)
        if tokenizer is not None and token:
            return int(tokenizer.convert_tokens_to_ids(token))
        raise InvalidInputError(f"cannot find the image token id of {type(config).__name__}")

    def image_mask(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Bool ``(batch, seq)``: positions whose hidden state belongs to an image token."""
        return inputs["input_ids"] == self.image_token_id

    @property
    def base_model(self) -> nn.Module:
        """The model without its LM head (the head's logits are never needed)."""
        inner = getattr(self.model, "model", None)
        return inner if isinstance(inner, nn.Module) else self.model

    def run_model(self, inputs: Mapping[str, torch.Tensor], **kwargs: Any) -> Any:
        return self.base_model(**inputs, use_cache=False, **kwargs)

    # ---------------------------------------------------------------- Adapter
    def token_masks(self, inputs: Mapping[str, torch.Tensor], poolings: Sequence[str]) -> TokenMasks:
        """Attention and image-token masks of a batch already on the device."""
        attention = inputs.get("attention_mask")
        attention = attention.bool() if attention is not None else None
        image = None
        if "image_mean" in poolings or TOKENS in poolings:
            image = self.image_mask(inputs)
            if attention is not None:
                image = image & attention
            empty = (~image.any(dim=1)).nonzero().flatten().tolist()
            if empty:
                raise InvalidInputError(
                    f"rows {empty} of the batch have no image tokens (id {self.image_token_id}); "
                    "check that the prompt format puts the image in the text"
                )
        return TokenMasks(attention=attention, image=image)

    def forward_pooled(
        self, batch: Mapping[str, torch.Tensor], layers: Sequence[int], poolings: Sequence[str]
    ) -> dict[tuple[str, int], torch.Tensor]:
        self.check_request(layers, poolings)
        inputs = move_batch(batch, self.device, self.dtype)
        masks = self.token_masks(inputs, poolings)
        capture = PooledCapture(self.layer_modules, layers, poolings, lambda name, h: pool_tokens(name, h, masks))
        with torch.no_grad():
            return capture.run(lambda: self.run_model(inputs))

    def image_token_grid(self, inputs: Mapping[str, torch.Tensor], n_tokens: int) -> tuple[int, int]:
        """``(rows, cols)`` of the ``n_tokens`` image tokens of one image (square unless a family knows better)."""
        return square_grid(n_tokens, f"{self.identity.model_id} image tokens")

    def token_grids(self, batch: Mapping[str, torch.Tensor]) -> dict[int, TokenGrid]:
        """Every decoder layer's image-token grid, from one forward pass of ``batch`` (one image)."""
        if self.token_refusal is not None:
            return super().token_grids(batch)
        model_type = str(getattr(self.model.config, "model_type", ""))
        if model_type in TILED:
            raise InvalidInputError(f"--tokens: {self.identity.model_id} ({model_type}) splits an image into tiles "
                                    "of its own choosing; its image tokens form no one grid to map")  # fmt: skip
        inputs = move_batch(batch, self.device, self.dtype)
        masks = self.token_masks(inputs, [TOKENS])
        grids: dict[int, TokenGrid] = {}

        def observe(layer: int, hidden: torch.Tensor) -> None:
            tokens = image_tokens(hidden, masks)
            rows, cols = self.image_token_grid(inputs, int(tokens.shape[1]))
            grids[layer] = TokenGrid(0, rows, cols, int(tokens.shape[2]), "image_mean")

        capture = PooledCapture(self.layer_modules, range(len(self.layer_modules)), ["last"],
                                lambda name, h: h.new_zeros(1), observe=observe)  # fmt: skip
        with torch.no_grad():
            capture.run(lambda: self.run_model(inputs))
        return grids

    def hidden_states(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Reference path (tests, the baseline benchmark): every layer via ``output_hidden_states``."""
        inputs = move_batch(batch, self.device, self.dtype)
        with torch.no_grad():
            return self.run_model(inputs, output_hidden_states=True).hidden_states
