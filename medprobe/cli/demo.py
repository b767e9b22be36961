"""``medprobe demo``: ingest -> extract -> sweep -> report end to end, offline, on a generated dataset."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from medprobe.cli.common import console, default_store_url, open_store
from medprobe.cli.options import StoreOpt
from medprobe.errors import MedprobeError
from medprobe.workflows.modelinfo import demo_data

DEMO_DATASET = "demo-synthetic-tissue"
DEMO_TASK = "tissue"


def _run_step(app: typer.Typer, title: str, args: list[str]) -> float:
    """Run one CLI command in-process, exactly as a user would type it; returns its seconds."""
    console.rule(f"[bold]{title}[/]  medprobe {' '.join(args)}", align="left")
    start = time.perf_counter()
    app(args=args, standalone_mode=False)
    return time.perf_counter() - start


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Folder for the generated images and the report.")
        ] = Path("medprobe-demo"),
        model: Annotated[
            str, typer.Option("--model", "-m", help="Model spec to extract with (offline).")
        ] = "efficientnet-lite0",
        patients: Annotated[int, typer.Option(min=2, help="Synthetic patients (6 tiles each).")] = 36,
        decode_workers: Annotated[
            int, typer.Option("--decode-workers", min=0, help="DataLoader processes decoding images.")
        ] = 1,
        store: StoreOpt = None,
    ) -> None:
        """Run ingest -> extract -> layer sweep -> report on a SYNTHETIC histology-like dataset, offline."""
        url = store or default_store_url()
        inner = app  # the steps run through the same application a user types into
        timings: dict[str, float] = {}
        console.print(
            "[bold]medprobe demo[/]: the images are SYNTHETIC (drawn by medprobe, no patient data); the model is "
            f"{model} with real ImageNet weights; store {url}"
        )
        start = time.perf_counter()
        labels_csv = demo_data(out / "data", patients=patients)
        timings["generate images"] = time.perf_counter() - start
        common = ["--store", url]
        timings["ingest"] = _run_step(
            inner,
            "1/4 ingest",
            ["ingest", str(labels_csv), "--layout", "csv", "--dataset", DEMO_DATASET, "--path-column", "path",
             "--label-column", DEMO_TASK, "--group-column", "patient_id", "--split-seed", "0", *common],
        )  # fmt: skip
        timings["extract"] = _run_step(
            inner,
            "2/4 extract",
            ["extract", "--dataset", DEMO_DATASET, "--model", model, "--layers", "all",
             "--decode-workers", str(decode_workers), *common],
        )  # fmt: skip
        s = open_store(url, create=True)
        before = set(s.sql("SELECT run_id FROM runs WHERE kind = 'sweep'").column(0).to_pylist())
        timings["sweep"] = _run_step(
            inner,
            "3/4 sweep",
            ["sweep", "--dataset", DEMO_DATASET, "--task", DEMO_TASK, "--model", model, *common],
        )
        s.refresh()
        after = s.sql("SELECT run_id FROM runs WHERE kind = 'sweep' ORDER BY started_at DESC").column(0).to_pylist()
        new = [r for r in after if r not in before]
        if not new:
            raise MedprobeError("the sweep finished but recorded no run; see the messages above")
        report_dir = out / "report"
        timings["report"] = _run_step(inner, "4/4 report", ["report", new[0], "--out", str(report_dir), *common])
        total = time.perf_counter() - start
        console.rule("[bold]done[/]", align="left")
        console.print(", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + f"; total {total:.1f} s")
        console.print(f"report: [bold]{report_dir.resolve()}[/] (summary.md and PNG plots)", highlight=False)
        console.print(f"query the results: medprobe sql \"SELECT * FROM probe_results WHERE run_id = '{new[0]}'\"")
