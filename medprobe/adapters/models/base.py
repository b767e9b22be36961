"""Pieces shared by the Hugging Face adapters: layer discovery, device moves, identity fields."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medprobe.errors import InvalidInputError

_AVOID_IN_PATH = ("vision", "visual", "perceiver", "resampler", "connector", "projector", "image", "audio")


def find_layer_list(
    model: nn.Module, n_expected: int | None, *, prefer: Iterable[str] = ()
) -> tuple[str, nn.ModuleList]:
    """Find the decoder stack: the ``ModuleList`` named ``*layers`` that holds the text blocks.

    Like nnsight's module paths, but found generically: candidates are every ``ModuleList`` whose
    name ends in ``layers`` outside vision/resampler/projector sub-modules; one of length
    ``n_expected`` wins, and among several, the first whose path contains a ``prefer`` word.
    """
    prefer = tuple(prefer)
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and name.rsplit(".", 1)[-1] == "layers"
        and not any(word in part for part in name.split(".")[:-1] for word in _AVOID_IN_PATH)
    ]
    if n_expected is not None:
        candidates = [(n, m) for n, m in candidates if len(m) == n_expected]
    if not candidates:
        raise InvalidInputError(
            f"cannot find the decoder layers of {type(model).__name__}: no ModuleList named '*layers' "
            f"with {n_expected} blocks outside the vision tower; this architecture needs its own adapter"
        )
    for word in prefer:
        for name, module in candidates:
            if word in name:
                return name, module
    return candidates[0]


def text_config(config: Any) -> Any:
    """The language-model part of a (possibly composite) config."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def move_batch(batch: Mapping[str, torch.Tensor], device: torch.device, float_dtype: torch.dtype) -> dict:
    """Tensors to ``device`` (non-blocking); floating tensors also cast to the compute dtype."""
    out = {}
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor):
            out[key] = value
        elif value.is_floating_point():
            out[key] = value.to(device=device, dtype=float_dtype, non_blocking=True)
        else:
            out[key] = value.to(device=device, non_blocking=True)
    return out


def sha256_of_files(paths: Iterable[Path]) -> str:
    """sha256 over the names and bytes of ``paths`` in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def sha256_of_state(module: nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes) of an in-memory model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if tensor.device.type == "meta":
            raise InvalidInputError("cannot hash the weights of a model on the meta device")
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


# files of a model directory that never change its numbers: documentation, licences, version control
_NOT_MODEL_FILES = re.compile(r"(?i)^(readme|license|licence|notice|citation)([._-].*)?$|.*\.md$")


def model_files(directory: Path) -> list[Path]:
    """Every file under ``directory`` that can change what the model computes: weights, ``config.json``,
    processor and tokenizer files, chat templates, custom code. Hidden entries (``.git``, ``.cache``) and
    documentation (README, LICENSE, ``*.md``) are left out."""
    files = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).parts
        if any(part.startswith(".") for part in rel) or not path.is_file() or _NOT_MODEL_FILES.match(path.name):
            continue
        files.append(path)
    return files


def local_revision(directory: Path) -> str:
    """A local model directory's identity: ``sha256:`` over the relative names and bytes of its
    :func:`model_files`, so an edit to any file that changes the numbers gives a new feature set."""
    digest = hashlib.sha256()
    for path in model_files(directory):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(sha256_of_files([path]).encode())
    return "sha256:" + digest.hexdigest()


def model_revision(model: nn.Module, source: str | Path | None) -> str:
    """The config's ``_commit_hash`` when there is one; for a local directory :func:`local_revision`;
    else sha256 of the model's tensors."""
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    if commit:
        return str(commit)
    if source is not None and Path(source).is_dir():
        return local_revision(Path(source))
    return "sha256:" + sha256_of_state(model)


def input_device(model: nn.Module) -> torch.device:
    """Where inputs must go: the device of the input embeddings (or the first parameter)."""
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if emb is not None and hasattr(emb, "weight"):
        return emb.weight.device
    return next(model.parameters()).device


def compute_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (what floating inputs are cast to)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
