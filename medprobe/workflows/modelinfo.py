"""``models`` (what medprobe loads, or one model described) and the demo's synthetic data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medprobe.errors import InvalidInputError
from medprobe.schemas.vocab import ComputeDType
from medprobe.workflows.common import choice
from medprobe.workflows.results import Result, jsonable


@dataclass
class ModelsResult(Result):
    """Either the supported backends and model types (``supported``), or one model described (``description``:
    layers, hidden sizes, poolings, preprocessing), or where a random model was saved (``saved``)."""

    supported: list[dict[str, Any]] = field(default_factory=list)
    description: dict[str, Any] | None = None
    saved: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The description, or the list of what loads, or ``{"saved": path}``."""
        if self.saved is not None:
            return {"saved": self.saved}
        return jsonable(self.description if self.description is not None else self.supported)

    def rows(self) -> list[dict[str, Any]]:
        """One row per backend entry, or per described property."""
        import json

        if self.description is not None:
            return [{"what": k, "value": v if isinstance(v, str) else json.dumps(jsonable(v))}
                    for k, v in self.description.items()]  # fmt: skip
        return [{"saved": self.saved}] if self.saved is not None else list(self.supported)


def models(
    *, model: str | None = None, device: str | None = None, dtype: str | ComputeDType = ComputeDType.fp32,
    trust_remote_code: bool = False, allow_pickle: bool = False, save: str | None = None,
) -> ModelsResult:  # fmt: skip
    """List the supported backends, model types and random models; with ``model``, describe that model (layers,
    hidden sizes, poolings, preprocessing; no images are run), loaded on ``device`` in ``dtype`` with
    ``trust_remote_code`` and ``allow_pickle`` as for extraction. ``save`` writes a ``tiny-random/*`` or
    ``random-full/*`` model to a directory in its hub layout, to try the local-directory path offline."""
    from medprobe.adapters import supported
    from medprobe.adapters.loading import load_adapter, parse_model_spec

    if model is None:
        if save is not None:
            raise InvalidInputError("--save needs -m tiny-random/<name> or -m random-full/<name>")
        from medprobe.synthetic.models import spec_names

        return ModelsResult(supported=supported.supported(spec_names()))
    spec = parse_model_spec(model)
    if save is not None:
        if spec.backend != "family":
            raise InvalidInputError(f"--save writes random models only (tiny-random/*, random-full/*), not {model!r}")
        from medprobe.synthetic.models import save_random

        target = Path(save)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            what = "a file" if not target.is_dir() else "a folder that is not empty"
            raise InvalidInputError(f"--save {save} is {what}: name a new or empty folder (nothing was written)")
        return ModelsResult(saved=str(save_random(model, save)))
    backend = spec.backend.replace("family", "random")
    adapter = load_adapter(spec, device=device or "cpu", dtype=choice(ComputeDType, dtype, "--dtype").value,
                           trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)  # fmt: skip
    return ModelsResult(description=supported.describe(adapter, backend))


def demo_data(out: str | Path, *, patients: int = 36) -> Path:
    """Draw the demo's SYNTHETIC histology-like dataset (three tissue classes, ``patients`` x 6 tiles) into ``out``;
    returns its labels CSV (columns path, tissue, patient_id)."""
    from medprobe.synthetic.tissue import write_demo_dataset

    return Path(write_demo_dataset(Path(out), patients=patients))
