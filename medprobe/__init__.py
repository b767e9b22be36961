"""medprobe: a feature store and probe trainer for what VLMs know about medical images.

The Python API is one function per command, named as the command, with the command's long options as keyword
arguments (``--test-split`` -> ``test_split``) and ``store=`` (a URL or an open ``FeatureStore``)::

    import medprobe
    medprobe.ingest(source="knee-oa-kl", layout="knee", dataset="knee")
    medprobe.extract(dataset="knee", model="efficientnet-lite0")
    result = medprobe.sweep(task="kl_grade", model="efficientnet-lite0", test_split="val")
    result.layer, result.test["macro_auc"], result.to_arrow()
    medprobe.vqa.run(items="vqa-rad", model="HuggingFaceM4/idefics2-8b")

Each records its run in the store's ``runs`` table and returns a typed result (numbers as attributes,
``to_dict()``, ``to_arrow()``): the same numbers the CLI prints. The names load on first use, so ``import medprobe``
stays light.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("medprobe")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

# name -> the module that defines it (loaded on first use: PEP 562)
_API = {
    **{name: "medprobe.workflows" for name in (
        "ingest", "datasets", "models", "extract", "submit", "worker", "status", "train", "sweep", "compare",
        "predict", "heatmap", "report", "zeroshot", "search", "sql", "export", "open_store", "load_probe", "Result",
        "StoreWarning",
    )},
    "FeatureStore": "medprobe.featurestore",
    "vqa": "medprobe.vqa",
}  # fmt: skip

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'medprobe' has no attribute {name!r}")
    module = importlib.import_module(_API[name])
    value = module if name == "vqa" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
