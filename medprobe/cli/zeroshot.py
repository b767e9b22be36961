"""``medprobe zeroshot``: classify a task's test images with class prompts through a CLIP-family model's text tower."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from medprobe.cli.common import console
from medprobe.cli.options import (
    AllowPickleOpt,
    DeviceOpt,
    ModelOpt,
    OptionalDatasetOpt,
    ProgressOutput,
    TaskOpt,
    with_group,
)
from medprobe.cli.probes import format_entry
from medprobe.schemas.vocab import ComputeDType, TestSplit
from medprobe.workflows import zero_shot as wf
from medprobe.workflows.common import N_BOOT

TEMPLATES_HELP = (
    "Class prompts: a built-in template set (generic, xray, pathology, dermatology, fundus) or a JSON file: "
    '{"<class>": ["prompt", ...]} or {"templates": ["a photo of {}."], "classes": {"<class>": "words"}} '
    '(multilabel, softmax models: add "negative": {"<finding>": [...]}, default "no <finding>").'
)


def _print_result(r: wf.ZeroshotResult) -> None:
    table = Table(title=f"zeroshot {r.dataset}/{r.task}  run {r.run_id}")
    for col in ("model", "probabilities", "templates", "n test", "macro AUC [95% CI]", "bal. acc", "acc"):
        table.add_column(col)
    cells = [format_entry(r.metrics.get(key) or {}) for key in ("macro_auc", "balanced_accuracy", "accuracy")]
    table.add_row(r.model, r.probabilities, r.templates, str(r.n_test), *cells)
    console.print(table)


@with_group(ProgressOutput, "output")
def zeroshot(
    output: ProgressOutput,
    task: TaskOpt,
    model: ModelOpt,
    dataset: OptionalDatasetOpt = None,
    templates: Annotated[str, typer.Option("--templates", help=TEMPLATES_HELP)] = "generic",
    test_split: Annotated[
        TestSplit, typer.Option("--test-split", help="The split scored (nothing is trained).")
    ] = TestSplit.test,
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="Score the test images that have embeddings.")
    ] = False,
    n_boot: Annotated[int, typer.Option("--n-boot", min=1, help="Bootstrap replicates for the CIs.")] = N_BOOT,
    boot_seed: Annotated[int, typer.Option("--boot-seed", help="Seed of the bootstrap replicates.")] = 0,
    device: DeviceOpt = None,
    dtype: Annotated[
        ComputeDType | None, typer.Option("--dtype", help="Compute dtype (default: bf16 on CUDA, fp32 on CPU).")
    ] = None,
    allow_pickle: AllowPickleOpt = False,
) -> None:
    """Zero-shot classification (CLIP, SigLIP, open_clip): image embeddings vs class prompts, no training.

    Image embeddings are extracted once into the store (the model's last layer, stored as float32: one vector
    per image) and text embeddings are kept too, so a rerun costs nothing; results land in probe_results
    (method zeroshot) beside the probes.
    """
    output.check()
    result = wf.zeroshot(
        task=task, model=model, dataset=dataset, templates=templates, test_split=test_split,
        allow_missing=allow_missing, n_boot=n_boot, boot_seed=boot_seed, device=device, dtype=dtype,
        allow_pickle=allow_pickle, no_progress=output.quiet, store=output.store,
    )  # fmt: skip
    output.render(result, show=lambda: _print_result(result))


def register(app: typer.Typer) -> None:
    """Add ``zeroshot``."""
    app.command("zeroshot")(zeroshot)
