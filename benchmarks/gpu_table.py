"""One Markdown table from gpu_check.sh's results folder: the GPU tests, then each benchmark against its baseline.

    python benchmarks/gpu_table.py RESULTS_DIR > gpu_check.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# the targets on one H100, where there is one
TARGETS = {
    "random-full/clip": ">= 10,000 img/s",
    "random-full/idefics": ">= 250 img/s",
    "trainer": "< 5 s for 256 probes, AUC within 2e-3 of sklearn",
}


def _read(path: Path) -> object | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def rows(results: Path) -> list[list[str]]:
    """Table rows: check, medprobe, baseline, ratio, target."""
    out: list[list[str]] = []
    tests = (results / "tests.txt").read_text().strip() if (results / "tests.txt").exists() else "did not run"
    out.append(["GPU-marked tests (`pytest -m gpu`)", tests, "-", "-", "all pass"])
    extract = _read(results / "extract.json")
    if isinstance(extract, list):
        for row in extract:
            ref, med, pil = row["reference"], row["medprobe"], row.get("medprobe_pil")
            stages = med.get("stage_seconds", {})
            staged = ", ".join(f"{k} {stages[k]:.1f}" for k in ("read", "decode", "preprocess", "forward", "write")
                               if k in stages)  # fmt: skip
            versus = f"; --decode pil {pil['images_per_s']:,.1f} img/s" if pil else ""
            out.append(
                [
                    f"extract {row['model']}: JPEG files -> committed rows",
                    f"{med['images_per_s']:,.1f} img/s ({med['images']:,} images, decode: {med.get('decode', '?')}, "
                    f"peak RSS {med['peak_rss_mb']:,.0f} MB; stage s: {staged}{versus})",
                    f"{ref['images_per_s']:,.1f} img/s (study's batch-1 loop, {ref['images']:,} images)",
                    f"{row['ratio']:,.1f}x",
                    TARGETS.get(row["model"], "-"),
                ]
            )
    else:
        out.append(["extract", "did not finish (see extract.log)", "-", "-", "-"])
    trainer = _read(results / "trainer.json")
    if isinstance(trainer, dict):
        out.append(
            [
                f"probes: {trainer['shape']}",
                f"{trainer['medprobe_wall_s']:.2f} s for {trainer['medprobe_probes']} probes "
                f"({trainer['not_converged']} not converged)",
                f"sklearn lbfgs {trainer['sklearn_wall_s_per_probe']:.2f} s / probe "
                f"({trainer['sklearn_probes']} fitted)",
                f"{trainer['speedup_per_probe']:,.0f}x per probe; "
                f"max /AUC - sklearn/ {trainer['max_auc_diff_vs_sklearn']:.5f}",
                TARGETS["trainer"],
            ]
        )
    else:
        out.append(["probes", "did not finish (see trainer.log)", "-", "-", "-"])
    return out


def main() -> None:
    results = Path(sys.argv[1])
    device = (results / "device.txt").read_text().strip() if (results / "device.txt").exists() else "unknown"
    print(f"**Device:** {device}\n")
    print("| check | medprobe | baseline (same run) | ratio | target |")
    print("|---|---|---|---|---|")
    for row in rows(results):
        print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")


if __name__ == "__main__":
    main()
