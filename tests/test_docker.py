"""docker/ cannot be built here (no Docker daemon); its images must at least pin what pyproject.toml pins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    out = {}
    for req in reqs:
        if m := re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+?)(?:\[[^\]]*\])?==([^;\s]+)", req.strip()):
            out[m.group(1).lower()] = m.group(2)
    return out


def test_images_pin_torch_like_pyproject_and_install_the_project() -> None:
    pins = _pins()
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        text = (ROOT / "docker" / name).read_text()
        named = dict(re.findall(r"\b([a-z][a-z0-9_\-]+)==([0-9][^\s'\"]*)", text))
        assert named, name
        for package, version in named.items():
            assert pins.get(package) == version, f"{name} pins {package}=={version}, pyproject {pins.get(package)}"
        assert {"torch", "torchvision"} <= set(named), name
        assert "pip install '.[" in text, f"{name} must install the project with its pinned dependencies"


def test_compose_runs_the_ray_engine_against_an_s3_store() -> None:
    text = (ROOT / "docker" / "compose.yaml").read_text()
    for needed in ("\"start\", \"--head\"", "AWS_ENDPOINT_URL", "minio",
                   "--engine ray", "capabilities: [gpu]"):  # fmt: skip
        assert needed in text, needed
