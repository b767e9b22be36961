"""Scoring one item with a decoder VLM, exactly: option log-likelihoods, letter probabilities, or a generation.

The prompt is the adapter's own: its processor's chat template around one image and the question text, with the
generation prompt (the assistant turn) appended, run through the processor together with the image, so the prompt
length is what the model sees (image tokens included).

* ``loglik``: each option's text, tokenised on its own (a leading space unless the prompt ends in whitespace), is
  appended to the prompt's token ids; its log-probability is the sum over its tokens of ``log_softmax`` of the
  logits at the position before each. Stored: the sum, the per-token mean and the token count; the choice is the
  largest sum. Most families run the prompt once and score every option from its key-value cache; Idefics (v1) and
  Mllama run prompt + option for all options as one right-padded batch (padding after a sequence cannot change a
  causal model's logits before it). Both equal one option at a time through the plain model.
* ``letter``: one forward pass of the prompt; the softmax over the shown letters' tokens at the answer position
  (each letter must be one token, with the same leading-space rule) is the probability vector.
* ``generate``: greedy decoding of at most ``max_new_tokens`` tokens, parsed by :mod:`medprobe.vqa.parse`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import torch
from PIL import Image

from medprobe.adapters.adapter import Adapter, Capability
from medprobe.adapters.models.base import move_batch
from medprobe.errors import InvalidInputError

MODES = ("loglik", "letter", "generate")
#: few-shot exemplars shown with their images (``--shots-with-images``): each exemplar's images and its text, before
#: the question's own images and text
Exemplars: TypeAlias = Sequence[tuple[Sequence[Image.Image], str]]
# Adapters say whether the prompt's key-value cache may be reused across options (``reuses_prompt_cache``, each
# family checked against a direct computation); Idefics (v1) and Mllama score prompt + option in one batch instead.


@dataclass
class Scored:
    """One item x rotation: per shown option values, or a generation."""

    loglik_sum: list[float] | None = None
    loglik_mean: list[float] | None = None
    n_tokens: list[int] | None = None
    letter_probs: list[float] | None = None
    generation: str | None = None


class VlmScorer:
    """Wraps a loaded decoder-VLM adapter (the extractor's) for the three scoring modes."""

    def __init__(self, adapter: Adapter) -> None:
        pre: Any = adapter.preprocessor
        model: Any = getattr(adapter, "model", None)
        if not adapter.supports(Capability.option_scoring) or model is None:
            raise InvalidInputError(
                f"model {adapter.identity.model_id} ({adapter.identity.adapter}) is not a vision-language model that "
                "answers in text; VQA needs an image-text-to-text model (LLaVA, Idefics, Qwen-VL, MedGemma, ...)"
            )
        self.adapter = adapter
        self.pre = pre
        self.model = model.eval()
        self.tokenizer = getattr(pre.processor, "tokenizer", None) or pre.processor
        self.device = adapter.device
        self.thinking = False  # --reasoning on a model whose chat template has its own thinking switch: turn it on

    # ------------------------------------------------------------------ inputs
    def prompt(self, text: str) -> str:
        """The exact text given to the processor (chat template and generation prompt applied)."""
        return str(self.pre.format_prompt(text, thinking=True) if self.thinking else self.pre.format_prompt(text))

    def inputs(self, images: Sequence[Image.Image], text: str, copies: int, exemplars: Exemplars = ()
               ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Processor tensors of ``copies`` identical (images, prompt) rows, on the CPU. Several images (an item's
        own, or exemplars shown with theirs) go in one prompt, in order, for models that take several."""
        from medprobe.adapters.models.vision_tower import to_rgb

        if len(images) == 1 and not exemplars:
            out = self.pre.run_processor(to_rgb(list(images)) * copies, self.prompt(text))
        else:
            segments = [*exemplars, (images, text)]
            shown = [im for ims, _ in segments for im in ims]
            if not self.adapter.several_images:
                raise InvalidInputError(
                    f"{self.adapter.identity.model_id} ({self.adapter.identity.adapter}) takes one image per prompt; "
                    f"this prompt has {len(shown)} (an item with several images, or exemplars with images): leave "
                    "such items out or use a model that takes several (Qwen2-VL, Idefics2/3, Gemma 3, ...)"
                )
            prompt = self.pre.format_interleaved([(len(ims), t) for ims, t in segments], thinking=self.thinking)
            out = self.pre.run_processor_sample(to_rgb(shown), prompt, copies)
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor) and k not in self.pre.drop_keys}

    def _prefix_after(self, prompt_ids: torch.Tensor) -> str:
        """The space an answer starts with: none when the prompt's tokens, as the model sees them, end in whitespace
        (a chat template's newline, or the one PaliGemma's processor appends after the prompt text), else one."""
        tail = str(self.tokenizer.decode(prompt_ids[-1:]))
        return "" if tail[-1:].isspace() else " "

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        batch = move_batch(dict(inputs), self.device, getattr(self.adapter, "dtype", torch.float32))
        with torch.no_grad():
            return self.model(**batch).logits.float()

    # ------------------------------------------------------------------ modes
    def loglik(self, images: Sequence[Image.Image], text: str, options: Sequence[str], exemplars: Exemplars = ()
               ) -> Scored:  # fmt: skip
        """Log-probability of each option's text after the prompt.

        Adapters that reuse the prompt cache (``reuses_prompt_cache``) run the prompt (with its image) once and
        score every option from its key-value cache; the others run prompt + option for all options as one
        right-padded batch. Both equal a direct one-option computation (tests, 1e-4).
        """
        # the processor runs once: the prompt alone (cached scoring), or one copy per option
        base = self.inputs(images, text, 1 if self.adapter.reuses_prompt_cache else len(options), exemplars)
        prefix = self._prefix_after(base["input_ids"][0])
        conts = [self._ids(prefix + o.strip()) for o in options]
        if any(not c for c in conts):
            raise InvalidInputError("an option's text is empty; every option needs text to score")
        if self.adapter.reuses_prompt_cache:
            return self._loglik_cached(base, conts)
        ids, mask = base["input_ids"], base["attention_mask"]
        n, length = ids.shape
        if not bool(mask.all()):
            raise InvalidInputError("the prompt was padded; cannot score options (report this model)")
        width = max(len(c) for c in conts)
        extra = torch.zeros((n, width), dtype=ids.dtype)
        extra_mask = torch.zeros((n, width), dtype=mask.dtype)
        for j, c in enumerate(conts):
            # padding repeats the option's last token: a pad id may be a special token (Qwen's pad is its image
            # token), and masked positions after the option cannot change its logits anyway
            extra[j] = torch.tensor(c + [c[-1]] * (width - len(c)), dtype=ids.dtype)
            extra_mask[j, : len(c)] = 1
        inputs = dict(base)
        inputs["input_ids"] = torch.cat([ids, extra], dim=1)
        inputs["attention_mask"] = torch.cat([mask, extra_mask], dim=1)
        for key, value in base.items():  # other per-token tensors grow over the option's tokens
            if key not in ("input_ids", "attention_mask") and value.shape[:2] == (n, length):
                inputs[key] = torch.cat([value, self._suffix_values(key, value, width)], 1)
        logp = torch.log_softmax(self._forward(inputs), dim=-1)
        sums, means, counts = [], [], []
        for j, c in enumerate(conts):
            pos = torch.arange(length - 1, length - 1 + len(c))
            tok = torch.tensor(c)
            values = logp[j, pos, tok].double()
            sums.append(float(values.sum()))
            means.append(float(values.mean()))
            counts.append(len(c))
        return Scored(loglik_sum=sums, loglik_mean=means, n_tokens=counts)

    def _suffix_values(self, key: str, value: torch.Tensor, width: int) -> torch.Tensor:
        """What a per-token input holds at the option's (answer text) positions: a mask of the images each token
        attends to (Mllama's cross-attention mask, Idefics' image attention mask) continues the prompt's last row, as
        in generation and as the processor gives for prompt + answer text; PaliGemma marks the answer as its suffix
        (token type 1, attended causally); other token-type inputs mark text (0)."""
        shape = (value.shape[0], width, *value.shape[2:])
        if key in ("cross_attention_mask", "image_attention_mask"):  # which images a token attends to
            return value[:, -1:].expand(shape).clone()
        if key == "token_type_ids":
            return torch.full(shape, self.adapter.answer_token_type, dtype=value.dtype)
        return torch.zeros(shape, dtype=value.dtype)

    def _loglik_cached(self, prompt_inputs: Mapping[str, torch.Tensor], conts: list[list[int]]) -> Scored:
        """The prompt once; each option's tokens from the prompt's cache, repeated over the options."""
        dtype = getattr(self.adapter, "dtype", torch.float32)
        prompt = move_batch(dict(prompt_inputs), self.device, dtype)
        length, n, width = prompt["input_ids"].shape[1], len(conts), max(len(c) for c in conts)
        with torch.no_grad():
            out = self.model(**prompt, use_cache=True)
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # predicts each option's first token
            cache = out.past_key_values
            cache.batch_repeat_interleave(n)
            ids = torch.tensor([c + [c[-1]] * (width - len(c)) for c in conts], device=self.device)
            mask = torch.cat(
                [torch.ones(n, length, dtype=torch.long), torch.tensor([[1] * len(c) + [0] * (width - len(c))
                                                                        for c in conts])], dim=1
            ).to(self.device)  # fmt: skip
            positions = torch.arange(length, length + width, device=self.device)
            kwargs: dict[str, Any] = {}
            inner = getattr(self.model, "model", None)
            deltas = getattr(inner, "rope_deltas", None)
            if deltas is not None:  # Qwen-VL's 3-D rotary positions continue from the prompt's, shifted by its deltas
                kwargs["position_ids"] = (positions[None, :] + deltas.to(self.device)).unsqueeze(0).expand(3, n, width)
            rest = self.model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True,
                              cache_position=positions, **kwargs).logits  # fmt: skip
        logp = torch.log_softmax(rest.float(), dim=-1)
        sums, means, counts = [], [], []
        for j, c in enumerate(conts):
            values = [first[c[0]].double()] + [logp[j, i - 1, c[i]].double() for i in range(1, len(c))]
            total = torch.stack(values)
            sums.append(float(total.sum()))
            means.append(float(total.mean()))
            counts.append(len(c))
        return Scored(loglik_sum=sums, loglik_mean=means, n_tokens=counts)

    def _letter_tokens(self, prefix: str, letters: Sequence[str]) -> list[int]:
        """The token of each shown letter as it would follow the prompt (after ``prefix``)."""
        out = []
        for letter in letters:
            ids = self._ids(prefix + letter)
            if len(ids) != 1:
                ids = self._ids(letter)
            if len(ids) != 1:
                raise InvalidInputError(
                    f"the letter {letter!r} is not one token for this tokenizer ({ids}); use --mode loglik or generate"
                )
            out.append(ids[0])
        if len(set(out)) != len(out):
            raise InvalidInputError("two option letters share one token for this tokenizer; use --mode loglik")
        return out

    def letter(self, images: Sequence[Image.Image], text: str, letters: Sequence[str], exemplars: Exemplars = ()
               ) -> Scored:  # fmt: skip
        """Softmax over the letters' logits at the answer position (one forward pass)."""
        inputs = self.inputs(images, text, 1, exemplars)
        token_ids = self._letter_tokens(self._prefix_after(inputs["input_ids"][0]), letters)
        logits = self._forward(inputs)[0, -1]
        probs = torch.softmax(logits[torch.tensor(token_ids)].double(), dim=0)
        return Scored(letter_probs=[float(p) for p in probs])

    def generate(self, images: Sequence[Image.Image], text: str, max_new_tokens: int = 8, exemplars: Exemplars = ()
                 ) -> Scored:  # fmt: skip
        """Greedy decoding of at most ``max_new_tokens`` new tokens."""
        inputs = move_batch(self.inputs(images, text, 1, exemplars), self.device,
                            getattr(self.adapter, "dtype", torch.float32))  # fmt: skip
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        new = out[0, inputs["input_ids"].shape[1] :]
        return Scored(generation=str(self.tokenizer.decode(new, skip_special_tokens=True)))


def choice_of(scored: Scored) -> int | None:
    """The shown option a probability mode chooses (largest log-likelihood sum, or letter probability)."""
    values = scored.loglik_sum if scored.loglik_sum is not None else scored.letter_probs
    if values is None:
        return None
    return int(np.argmax(np.asarray(values)))
