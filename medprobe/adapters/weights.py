"""Where a checkpoint's weights come from, and the supply-chain rule: safetensors, or pickle only when asked.

A ``.bin`` / ``.pt`` / ``.pth`` checkpoint is a Python pickle: loading one can run code. medprobe loads
weights from ``.safetensors`` files; a pickle checkpoint is used only with ``allow_pickle`` (the CLI's
``--allow-pickle``), and then through ``torch.load(weights_only=True)`` as the libraries do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medprobe.adapters.models.base import sha256_of_files
from medprobe.errors import ModelError, ModelNotFoundError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pth.tar")
PICKLE_HINT = (
    "a pickle checkpoint can run code when loaded; convert it to safetensors, or rerun with --allow-pickle "
    "if you trust its source"
)


def is_pickle(path: str | Path) -> bool:
    """Whether ``path`` names a pickle checkpoint (by its suffix)."""
    return str(path).endswith(PICKLE_SUFFIXES)


def local_weights(directory: Path, preferred: Sequence[str], *, allow_pickle: bool, config: str) -> Path:
    """The weights file a library will load from ``directory``: the first of ``preferred`` that exists.

    Any ``*.safetensors`` counts when none of ``preferred`` is there. Raises ``NotFoundError`` naming the
    expected files when there are no weights, and ``InvalidInputError`` when only a pickle is there and
    ``allow_pickle`` is false.
    """
    present = [directory / name for name in preferred if (directory / name).is_file()]
    present += sorted(p for p in directory.glob("*.safetensors") if p not in present)
    present += sorted(p for p in directory.iterdir() if p.is_file() and is_pickle(p) and p not in present)
    if not present:
        raise ModelNotFoundError(
            f"model directory {str(directory)!r} has its {config} but no weights: expected {preferred[0]} "
            f"(or one of {', '.join(preferred[1:])})"
        )
    chosen = present[0]
    if is_pickle(chosen) and not allow_pickle:
        raise ModelError(
            f"the weights in {str(directory)!r} are only in the pickle file {chosen.name}; " + PICKLE_HINT
        )
    return chosen


def hub_file(repo_id: str, filename: str) -> Path | None:
    """Download (or find in the local cache) one file of a Hugging Face repo; None when the repo lacks it.

    Raises ``NotFoundError`` when the repo cannot be reached and is not cached.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except LocalEntryNotFoundError as e:  # offline, not cached (a subclass of EntryNotFoundError: first)
        raise ModelNotFoundError(
            f"cannot fetch {filename} of {repo_id!r}: the hub is unreachable and the file is not in the local cache; "
            "download the repo on a machine with network access and pass its local directory"
        ) from e
    except RepositoryNotFoundError as e:
        raise ModelNotFoundError(
            f"Hugging Face repo {repo_id!r} does not exist or is private (log in with `hf auth login`)"
        ) from e
    except EntryNotFoundError:  # the repo is there and lacks the file
        return None


def hub_weights(repo_id: str, safetensors: str, pickles: Sequence[str], *, allow_pickle: bool) -> Path:
    """The repo's safetensors weights; its pickle weights only with ``allow_pickle``."""
    found = hub_file(repo_id, safetensors)
    if found is not None:
        return found
    if not allow_pickle:
        raise ModelError(f"Hugging Face repo {repo_id!r} has no {safetensors}; " + PICKLE_HINT)
    for name in pickles:
        found = hub_file(repo_id, name)
        if found is not None:
            return found
    raise ModelNotFoundError(f"Hugging Face repo {repo_id!r} has no weights file ({safetensors}, {', '.join(pickles)})")


def weights_revision(path: Path) -> str:
    """The hub commit of a cached download (``.../snapshots/<commit>/file``), else sha256 of the file."""
    if path.parent.parent.name == "snapshots" and len(path.parent.name) == 40:
        return path.parent.name
    return "sha256:" + sha256_of_files([path])
