"""Prompt presets for the study's image domains, custom prompts, and chat-template rendering.

The prompt text (after resolving a preset) is part of the feature-set key; the chat template,
when the processor has one, is part of the preprocessing fingerprint.
"""

from __future__ import annotations

from typing import Any

from medprobe.errors import InvalidInputError

PRESETS: dict[str, str] = {
    "general": "Describe this medical image.",
    "histology": (
        "This is a histopathology image of a tissue section stained with hematoxylin and eosin. "
        "Which tissue type is shown?"
    ),
    "radiology-chest": "This is a chest X-ray. Describe the findings.",
    "radiology-knee": "This is a knee X-ray. Describe the severity of osteoarthritis.",
    "dermatology": "This is a dermatoscopic image of a skin lesion. What kind of lesion is it?",
    "fundus": "This is a colour fundus photograph of the retina. Describe any signs of disease.",
}


def preset_names() -> list[str]:
    """The names accepted by ``--prompt-preset``."""
    return sorted(PRESETS)


def resolve_prompt(prompt: str | None = None, preset: str | None = None) -> str:
    """The prompt text from ``--prompt TEXT`` or ``--prompt-preset NAME`` (exactly one of them)."""
    if prompt is not None and preset is not None:
        raise InvalidInputError("give either --prompt or --prompt-preset, not both")
    if preset is not None:
        key = preset.strip().lower().replace("_", "-").replace(" ", "-")
        if key not in PRESETS:
            raise InvalidInputError(f"unknown prompt preset {preset!r}; choose from {', '.join(preset_names())}")
        return PRESETS[key]
    if prompt is None:
        raise InvalidInputError(f"this model needs --prompt TEXT or --prompt-preset ({', '.join(preset_names())})")
    if not prompt.strip():
        raise InvalidInputError("--prompt is empty")
    return prompt


def chat_messages(prompt: str) -> list[dict[str, Any]]:
    """One user turn: the image, then the prompt text."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def interleaved_messages(segments: list[tuple[int, str]]) -> list[dict[str, Any]]:
    """One user turn of segments, each its images (a count) then its text."""
    content: list[dict[str, Any]] = []
    for n_images, text in segments:
        content += [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def apply_chat_template(processor: Any, prompt: str, *, thinking: bool = False) -> str | None:
    """The processor's chat template rendered for one image + ``prompt`` with the generation prompt
    appended, or None when the processor has no template; ``thinking`` sets the template's own
    ``enable_thinking`` switch (templates without one ignore it)."""
    if not getattr(processor, "chat_template", None):
        return None
    extra = {"enable_thinking": True} if thinking else {}
    return processor.apply_chat_template(chat_messages(prompt), add_generation_prompt=True, tokenize=False, **extra)


def has_thinking_switch(processor: Any) -> bool:
    """Whether the processor's chat template has its own thinking switch (``enable_thinking``, as Qwen3-style
    templates do)."""
    return "enable_thinking" in str(getattr(processor, "chat_template", None) or "")
