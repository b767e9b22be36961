"""The package's layering, checked on every import statement (module level and inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from medprobe.ingestion.formats import FORMATS
from medprobe.schemas.vocab import Layout

ROOT = Path(__file__).resolve().parents[1] / "medprobe"

# area -> areas it must never import (data flows images -> ingest/extractor -> store -> trainer -> store)
# The workflow layer (``workflows``) sits on top of ingest, extractor, trainer and vqa; the CLI sits on top of it
# and imports none of their internals.
FORBIDDEN = {
    "schemas": {"featurestore", "ingestion", "adapters", "extractor", "engines", "trainer", "cli", "synthetic",
                "imaging", "layerspec", "vqa", "workflows"},
    "featurestore": {"ingestion", "adapters", "extractor", "engines", "trainer", "cli", "synthetic", "imaging",
                     "layerspec", "vqa", "workflows"},
    "imaging": {"featurestore", "ingestion", "adapters", "extractor", "engines", "trainer", "cli", "synthetic", "vqa",
                "workflows"},
    "layerspec": {"featurestore", "ingestion", "adapters", "extractor", "engines", "trainer", "cli", "synthetic",
                  "vqa", "workflows"},
    "ingestion": {"adapters", "extractor", "engines", "trainer", "cli", "synthetic", "vqa", "workflows"},
    # models as their own package: the extraction pipeline, the engines, zero-shot and VQA use it, never the reverse
    "adapters": {"ingestion", "extractor", "engines", "trainer", "cli", "synthetic", "vqa", "workflows"},
    "extractor": {"ingestion", "engines", "trainer", "cli", "synthetic", "vqa", "workflows"},
    "engines": {"ingestion", "trainer", "cli", "synthetic", "vqa", "workflows"},
    "trainer": {"ingestion", "adapters", "extractor", "engines", "cli", "synthetic", "vqa", "workflows"},
    "synthetic": {"ingestion", "extractor", "engines", "trainer", "cli", "vqa", "workflows"},
    "vqa": {"engines", "trainer", "cli", "synthetic"},  # VQA items' images enter through ingestion's add_images
    "workflows": {"cli"},
    "cli": {"ingestion", "adapters", "extractor", "engines", "trainer", "vqa", "synthetic", "imaging", "layerspec"},
}
# ``medprobe.vqa`` re-exports its workflow functions (``medprobe.vqa.run``): its __init__ is the one vqa module that
# may import the workflow layer.
UPWARD_REEXPORTS = {"medprobe.vqa": {"medprobe.workflows.vqa"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """Every ``medprobe...`` module named by an import in the file (``from a import b`` counts ``a.b`` if a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medprobe"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in MODULES else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("medprobe"))
    return out


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


GRAPH = {m: {t for t in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(GRAPH[m]):
            if t == _package_of(m):  # a submodule importing its own package's __init__ is not a cycle of modules
                continue
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(t) :], t]))
            if t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])


def _package_of(m: str) -> str:
    return m.rsplit(".", 1)[0]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_areas_import_only_downstream(module: str) -> None:
    area = _area(module)
    for target in GRAPH[module] - UPWARD_REEXPORTS.get(module, set()):
        assert _area(target) not in FORBIDDEN.get(area, set()), f"{module} imports {target}"
    if _area(module) == "vqa" and module not in UPWARD_REEXPORTS:
        assert not any(_area(t) == "workflows" for t in GRAPH[module]), f"{module} imports the workflow layer"


@pytest.mark.parametrize(
    "module",
    sorted(m for m in MODULES if _area(m) in {"adapters", "extractor", "engines", "trainer", "ingestion", "cli",
                                              "workflows"}),
)
def test_the_store_is_used_through_its_public_api(module: str) -> None:
    for target in GRAPH[module]:
        if _area(target) == "featurestore":
            assert target == "medprobe.featurestore", f"{module} reaches into {target}"


def test_every_layout_has_a_parser() -> None:
    assert {x.value for x in Layout} == set(FORMATS)
