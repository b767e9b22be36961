"""``load_adapter(spec)``: a model spec -> a ready :class:`~medprobe.adapters.adapter.Adapter`.

A spec is one of:

* ``<family>/<name>`` where ``<family>`` is registered under the ``medprobe.model_families`` entry-point
  group: ``tiny-random/<name>`` / ``random-full/<name>`` are random-weight models built in code
  (``medprobe.synthetic.models``, for tests and smoke runs);
* a plugin name registered under the ``medprobe.models`` entry-point group (``efficientnet-lite0``);
* ``timm/<name>`` (timm's registry) or ``open_clip:<arch>/<pretrained>`` (open_clip's);
* ``hf-hub:<org>/<name>`` or a local directory, dispatched on the files it holds:
  ``open_clip_config.json`` -> open_clip; a ``config.json`` naming an ``architecture`` -> timm; a
  ``config.json`` naming a ``model_type`` -> transformers;
* a Hugging Face model id, loaded with the ``Auto*`` classes and dispatched on ``AutoConfig``'s
  ``model_type`` (see ``medprobe.adapters.models.registry``).

Weights load from safetensors; a pickle checkpoint only with ``allow_pickle`` (``medprobe.adapters.weights``);
a repository's own code runs only with ``trust_remote_code``.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

import torch

from medprobe.adapters.adapter import Adapter
from medprobe.adapters.models import Family, families, generic
from medprobe.adapters.models.base import model_revision
from medprobe.adapters.weights import PICKLE_HINT, local_weights
from medprobe.errors import InvalidInputError, ModelError, ModelNotFoundError
from medprobe.schemas.vocab import QUANTIZATIONS

# what transformers' from_pretrained looks for, safetensors first (shards: any *.safetensors, then any pickle)
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

PLUGIN_GROUP = "medprobe.models"
FAMILY_GROUP = "medprobe.model_families"  # spec prefixes: "<family>/<name>" -> loader(spec, device=, dtype=)
DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}





def torch_dtype(name: str) -> torch.dtype:
    """``bf16`` / ``fp16`` / ``fp32`` (or the long names) -> the torch dtype."""
    try:
        return DTYPES[name]
    except KeyError:
        raise InvalidInputError(f"unknown dtype {name!r}; choose from bf16, fp16, fp32") from None


def plugin_names() -> list[str]:
    """Model specs provided by installed plugins (entry-point group ``medprobe.models``)."""
    return sorted(ep.name for ep in entry_points(group=PLUGIN_GROUP))


def supported_model_types() -> list[str]:
    """Hugging Face ``model_type`` values with a dedicated adapter."""
    return sorted(families())


@dataclass(frozen=True)
class ModelSpec:
    """A model spec parsed once: what was given and which loader serves it."""

    text: str  # as the user wrote it (the feature sets' model_id)
    backend: Backend

    @property
    def repo(self) -> str:
        """What the loader opens: the hub repo of ``hf-hub:<org>/<name>``, else the spec itself."""
        return _hub_repo(self.text)


def parse_model_spec(spec: str | ModelSpec) -> ModelSpec:
    """``spec`` with its backend decided (a local directory or ``hf-hub:`` repo by the config file it holds)."""
    return spec if isinstance(spec, ModelSpec) else ModelSpec(spec, model_backend(spec))


def load_adapter(
    model_spec: str | ModelSpec,
    *,
    device: str = "cpu",
    dtype: str = "fp32",
    trust_remote_code: bool = False,
    quantization: str | None = None,
    device_map: str | None = None,
    allow_pickle: bool = False,
) -> Adapter:
    """Load the model named by ``model_spec`` and wrap it in its adapter (eval mode, on ``device``).

    ``device_map`` (e.g. ``"auto"``) spreads a large model over the visible GPUs through accelerate
    and takes precedence over ``device``; ``quantization`` (``"8bit"``/``"4bit"``) needs bitsandbytes.
    ``allow_pickle`` lets a ``.bin``/``.pth`` checkpoint load when a repo has no safetensors.
    """
    torch_dtype(dtype)  # validate early
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise InvalidInputError(f"unknown quantization {quantization!r}; choose from {', '.join(QUANTIZATIONS)}")
    spec = parse_model_spec(model_spec)
    backend, text = spec.backend, spec.text
    if backend != "transformers" and (quantization or device_map):
        raise InvalidInputError(f"quantization and device_map apply to Hugging Face checkpoints, not to {text!r}")
    if backend == "family":
        loaders = {ep.name: ep for ep in entry_points(group=FAMILY_GROUP)}
        load_family: Callable[..., Adapter] = loaders[text.split("/", 1)[0]].load()
        return load_family(text, device=device, dtype=dtype)
    if backend == "plugin":
        plugins = {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}
        build: Callable[..., Adapter] = plugins[text].load()
        return build(device=device, dtype=dtype)
    if backend in ("timm", "open_clip"):
        return _load_encoder(backend, text, device=device, dtype=torch_dtype(dtype), allow_pickle=allow_pickle)
    return _load_hf(
        spec.repo,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        quantization=quantization,
        device_map=device_map,
        allow_pickle=allow_pickle,
    )


#: which loader serves a spec (``medprobe models`` lists each, the built-in random ``family`` as "random")
Backend = Literal["transformers", "timm", "open_clip", "plugin", "family"]
HF_HUB = "hf-hub:"


def model_backend(spec: str) -> Backend:
    """Which loader serves ``spec``: ``family``, ``plugin``, ``timm``, ``open_clip`` or ``transformers``.

    A local directory and an ``hf-hub:`` repo are told apart by the config file they hold (see the module doc).
    """
    from medprobe.adapters.models import open_clip_encoder, timm_encoder

    if "/" in spec and spec.split("/", 1)[0] in {ep.name for ep in entry_points(group=FAMILY_GROUP)}:
        return "family"
    if spec in {ep.name for ep in entry_points(group=PLUGIN_GROUP)}:
        return "plugin"
    if spec.startswith(timm_encoder.SPEC_PREFIX):
        return "timm"
    if spec.startswith(open_clip_encoder.SPEC_PREFIX):
        return "open_clip"
    if spec.startswith(HF_HUB):
        repo = _hub_repo(spec)
        if open_clip_encoder.hub_is_open_clip(repo):
            return "open_clip"
        return "timm" if timm_encoder.hub_is_timm(repo) else "transformers"
    if _looks_like_path(spec):
        directory = Path(spec).expanduser()
        if not directory.is_dir():
            raise ModelNotFoundError(f"model directory {spec!r} does not exist")
        if (directory / open_clip_encoder.CONFIG_FILE).is_file():
            return "open_clip"
        config = directory / "config.json"
        if not config.is_file():
            raise ModelNotFoundError(
                f"model directory {spec!r} has no config.json (transformers, timm) or "
                f"{open_clip_encoder.CONFIG_FILE} (open_clip)"
            )
        try:
            parsed = json.loads(config.read_text())
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot read {config}: {e}; it must be the model's JSON config") from e
        return "timm" if isinstance(parsed, dict) and timm_encoder.is_timm_config(parsed) else "transformers"
    return "transformers"


def _hub_repo(spec: str) -> str:
    repo = spec.removeprefix(HF_HUB)
    if spec.startswith(HF_HUB) and repo.count("/") != 1:
        raise InvalidInputError(f"{spec!r} is not hf-hub:<org>/<name>")
    return repo


def _load_encoder(backend: str, spec: str, *, device: str, dtype: torch.dtype, allow_pickle: bool) -> Adapter:
    from medprobe.adapters.models import open_clip_encoder, timm_encoder

    if spec.startswith(timm_encoder.SPEC_PREFIX):
        return timm_encoder.load_timm_name(spec, device=device, dtype=dtype, allow_pickle=allow_pickle)
    if spec.startswith(open_clip_encoder.SPEC_PREFIX):
        return open_clip_encoder.load_open_clip_name(spec, device=device, dtype=dtype, allow_pickle=allow_pickle)
    if spec.startswith(HF_HUB):
        load_hub = timm_encoder.load_timm_hub if backend == "timm" else open_clip_encoder.load_open_clip_hub
        return load_hub(_hub_repo(spec), device=device, dtype=dtype, allow_pickle=allow_pickle)
    load_dir = timm_encoder.load_timm_dir if backend == "timm" else open_clip_encoder.load_open_clip_dir
    return load_dir(Path(spec).expanduser(), model_id=spec, device=device, dtype=dtype, allow_pickle=allow_pickle)


def adapter_from_model(
    model: torch.nn.Module,
    processor: Any,
    *,
    model_id: str,
    revision: str | None = None,
    source: str | Path | None = None,
) -> Adapter:
    """Wrap an already-built Hugging Face model and its processor in the adapter of its ``model_type``."""
    family = _family(model.config, model_id)
    return family.wrap(model, processor, model_id=model_id, revision=revision or model_revision(model, source))


# ----------------------------------------------------------------------------- Hugging Face checkpoints
def _family(config: Any, spec: str) -> Family:
    model_type = getattr(config, "model_type", None)
    registered = families()
    if model_type in registered:
        return registered[model_type]
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return generic()
    raise ModelError(
        f"model {spec!r} has architecture {model_type!r}, which medprobe cannot extract from; supported: "
        f"{', '.join(supported_model_types())}, any other image-text-to-text model with a decoder stack, "
        f"and the plugins {', '.join(plugin_names()) or '(none installed)'}"
    )


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or Path(spec).expanduser().exists()


def _load_config(spec: str, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    if _looks_like_path(spec) and not Path(spec).expanduser().is_dir():
        raise ModelNotFoundError(f"model directory {spec!r} does not exist")
    try:
        return AutoConfig.from_pretrained(spec, trust_remote_code=trust_remote_code)
    except OSError as e:
        if Path(spec).expanduser().is_dir():
            raise ModelError(f"cannot read the checkpoint in directory {spec!r}: {e}") from e
        raise ModelNotFoundError(
            f"model {spec!r} not found: it is neither a local checkpoint directory nor a Hugging Face model id "
            f"that can be downloaded or found in the local cache ({e}); a timm or open_clip repo needs the "
            f"hf-hub: prefix (hf-hub:{spec})".replace("\n", " ")
        ) from e
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise ModelError(
                f"model {spec!r} ships its own code; rerun with --trust-remote-code if you trust it"
            ) from e
        raise ModelError(f"cannot read the config of model {spec!r}: {e}") from e


def _quantization_config(quantization: str | None, dtype: str) -> Any:
    if quantization is None:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InvalidInputError(
            f"{quantization} loading needs the bitsandbytes package (and a CUDA GPU): pip install bitsandbytes"
        )
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch_dtype(dtype))


def _load_processor(family: Family, spec: str, trust_remote_code: bool) -> Any:
    from transformers import AutoImageProcessor, AutoProcessor

    if family.processor == "image":
        return AutoImageProcessor.from_pretrained(spec)
    if family.processor == "auto":
        return AutoProcessor.from_pretrained(spec, trust_remote_code=trust_remote_code)
    return family.processor.from_pretrained(spec)


def _load_hf(
    spec: str,
    *,
    device: str,
    dtype: str,
    trust_remote_code: bool,
    quantization: str | None,
    device_map: str | None,
    allow_pickle: bool = False,
) -> Adapter:
    import transformers

    config = _load_config(spec, trust_remote_code)
    family = _family(config, spec)
    directory = Path(spec).expanduser()
    if directory.is_dir():  # name the missing or pickle-only weights before transformers does
        local_weights(directory, HF_WEIGHT_FILES, allow_pickle=allow_pickle, config="config.json")
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype), "trust_remote_code": trust_remote_code}
    if not allow_pickle:
        kwargs["use_safetensors"] = True
    quant = _quantization_config(quantization, dtype)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = device_map or {"": device}
    elif device_map is not None:
        if importlib.util.find_spec("accelerate") is None:
            raise InvalidInputError("device_map needs the accelerate package: pip install accelerate")
        kwargs["device_map"] = device_map
    model_cls: Any
    if family.model_class == "auto":
        model_cls = transformers.AutoModelForImageTextToText
    else:
        model_cls = getattr(transformers, family.model_class)
        kwargs.pop("trust_remote_code")
    try:
        model = model_cls.from_pretrained(spec, **kwargs)
    except OSError as e:
        if not allow_pickle and "safetensors" in str(e):
            raise InvalidInputError(f"model {spec!r} has no safetensors weights; " + PICKLE_HINT) from e
        raise
    if "device_map" not in kwargs:
        model = model.to(device)
    processor = _load_processor(family, spec, trust_remote_code)
    source = Path(spec).expanduser() if Path(spec).expanduser().is_dir() else None
    return adapter_from_model(model, processor, model_id=spec, source=source)
