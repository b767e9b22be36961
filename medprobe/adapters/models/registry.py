"""The registry of Hugging Face model families: which adapter class serves each ``config.model_type``.

A family registers itself where its adapter is defined (as timm's ``register_model``)::

    @register_family("llava", name="llava")
    class LlavaAdapter(DecoderVLMAdapter): ...

``medprobe.adapters.models.families()`` imports the family modules (so the registry is complete) and returns it; any
other model type that transformers loads as image-text-to-text goes through ``generic()``, the generic decoder
adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from medprobe.adapters.adapter import Adapter

A = TypeVar("A", bound="type[Adapter]")


@dataclass(frozen=True)
class Family:
    """How to load and wrap one architecture family."""

    name: str  # the adapter name recorded in feature sets (``identity.adapter``)
    adapter: type[Adapter]
    model_class: str = "auto"  # a transformers class name, or "auto" (AutoModelForImageTextToText)
    processor: Any = "auto"  # "auto" (AutoProcessor), "image" (AutoImageProcessor) or a processor class
    names_family: bool = False  # the adapter serves several families and is told which (vision towers)

    def wrap(self, model: Any, processor: Any, *, model_id: str, revision: str) -> Adapter:
        """The adapter of a loaded model and its processor."""
        if self.names_family:
            return self.adapter(model, processor, family=self.name, model_id=model_id,  # type: ignore[call-arg]
                                revision=revision)  # fmt: skip
        return self.adapter(model, processor, model_id=model_id, revision=revision)  # type: ignore[call-arg]


_FAMILIES: dict[str, Family] = {}


def register_family(
    *model_types: str, name: str, model_class: str = "auto", processor: Any = "auto", names_family: bool = False
) -> Callable[[A], A]:
    """Register the decorated adapter class for ``model_types`` (``config.model_type`` values)."""

    def add(cls: A) -> A:
        for model_type in model_types:
            if model_type in _FAMILIES and _FAMILIES[model_type].adapter is not cls:
                raise ValueError(f"model_type {model_type!r} is registered twice")
            _FAMILIES[model_type] = Family(name, cls, model_class, processor, names_family)
        return cls

    return add


def registered() -> dict[str, Family]:
    """The families registered so far (``medprobe.adapters.models.families`` imports them all first)."""
    return dict(_FAMILIES)
