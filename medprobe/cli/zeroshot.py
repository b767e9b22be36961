"""``medprobe zeroshot``: classify a task's test images with class prompts through a CLIP-family model's text tower."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from medprobe.cli.common import console, open_store
from medprobe.cli.options import (
    AllowPickleOpt,
    DeviceOpt,
    FormatOpt,
    ModelOpt,
    NoProgressOpt,
    OptionalDatasetOpt,
    OutOpt,
    StoreOpt,
    TaskOpt,
)
from medprobe.cli.output import emit, resolve_format, wants_progress
from medprobe.cli.train import format_entry, metrics_doc
from medprobe.schemas.vocab import ComputeDType, TestSplit
from medprobe.trainer.defaults import N_BOOT

TEMPLATES_HELP = (
    "Class prompts: a built-in template set (generic, xray, pathology, dermatology, fundus) or a JSON file: "
    '{"<class>": ["prompt", ...]} or {"templates": ["a photo of {}."], "classes": {"<class>": "words"}} '
    '(multilabel, softmax models: add "negative": {"<finding>": [...]}, default "no <finding>").'
)


def register(app: typer.Typer) -> None:
    """Add ``zeroshot``."""

    @app.command()
    def zeroshot(
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
        no_progress: NoProgressOpt = False,
        fmt: FormatOpt = None,
        out: OutOpt = None,
        store: StoreOpt = None,
    ) -> None:
        """Zero-shot classification (CLIP, SigLIP, open_clip): image embeddings vs class prompts, no training.

        Image embeddings are extracted once into the store (the model's last layer, stored as float32: one vector
        per image) and text embeddings are kept too, so a rerun costs nothing; results land in probe_results
        (method zeroshot) beside the probes.
        """
        from medprobe.extractor.contrastive import load_contrastive, text_embeddings
        from medprobe.extractor.pipeline import ExtractOptions, extract, resolve_request
        from medprobe.featurestore import start_run
        from medprobe.trainer.data import probe_kind, resolve_task
        from medprobe.trainer.experiment import ExperimentSpec
        from medprobe.trainer.zeroshot import class_prompts, run_zeroshot

        resolve_format(fmt, out)
        st = open_store(store)
        task_row = resolve_task(st, task, dataset)
        kind = probe_kind(task_row)
        class_prompts(task_row.class_names, kind, templates, task=task_row.task, negatives=False)  # fail early
        options = ExtractOptions.model_validate({
            "dataset": task_row.dataset, "model": model, "layers": "-1", "splits": [test_split.value],
            "device": device, "dtype": None if dtype is None else dtype.value, "allow_pickle": allow_pickle,
            "storage_dtype": "float32",
        })  # fmt: skip
        adapter, tower = load_contrastive(
            model, device=options.resolved_device(), dtype=options.resolved_dtype(), allow_pickle=allow_pickle
        )
        prompts = class_prompts(task_row.class_names, kind, templates, task=task_row.task,
                                negatives=tower.rule == "softmax")  # fmt: skip
        request = resolve_request(adapter, options)
        feature_set_id = next(iter(request.feature_set_ids.values()))
        layer = request.layers[0]
        show_bar = not no_progress and wants_progress(fmt, out)
        extracted = extract(st, options, adapter=adapter, show_progress=show_bar)
        texts = prompts.texts()
        emb = dict(zip(texts, text_embeddings(st, tower, texts), strict=True))
        spec = ExperimentSpec(feature_set_id=feature_set_id, task=task_row, layers=[layer], method="zeroshot",
                              test_split=test_split.value, allow_missing=allow_missing, n_boot=n_boot,
                              seed=boot_seed)  # fmt: skip
        params = {"model": model, "feature_set_id": feature_set_id, "layer": layer, "dataset": task_row.dataset,
                  "task": task_row.task, "templates": templates, "test_split": test_split.value,
                  "text_model_key": tower.key, "n_boot": n_boot, "seed": boot_seed}  # fmt: skip
        with start_run(st, "zeroshot", params) as run:
            outcome = run_zeroshot(
                st, spec, run.run_id, prompts, emb, logit_scale=tower.logit_scale, logit_bias=tower.logit_bias,
                record={"model_id": model, "text_model_key": tower.key},
            )
            run.summary.update({"probe_id": outcome.probe_id, "n_test": len(outcome.test_hashes),
                                "test_macro_auc": outcome.metrics["macro_auc"]["value"]})  # fmt: skip
        test = metrics_doc(outcome.metrics)
        document: dict[str, Any] = {
            "run_id": run.run_id,
            "kind": "zeroshot",
            "method": "zeroshot",
            "model": model,
            "feature_set_id": feature_set_id,
            "layer": layer,
            "dataset": task_row.dataset,
            "task": task_row.task,
            "class_names": list(task_row.class_names),
            "probe_id": outcome.probe_id,
            "probabilities": tower.rule,
            "logit_scale": tower.logit_scale,
            "logit_bias": tower.logit_bias,
            "templates": prompts.source,
            "prompts": dict(zip(task_row.class_names, prompts.positive, strict=True)),
            "n_test": len(outcome.test_hashes),
            "images_extracted": extracted.get("images_committed", 0),
            "test": test,
        }

        def show() -> None:
            table = Table(title=f"zeroshot {task_row.dataset}/{task_row.task}  run {run.run_id}")
            for col in ("model", "probabilities", "templates", "n test", "macro AUC [95% CI]", "bal. acc", "acc"):
                table.add_column(col)

            def cell(key: str) -> str:
                return format_entry(outcome.metrics.get(key) or {})

            table.add_row(model, tower.rule, prompts.source, str(len(outcome.test_hashes)), cell("macro_auc"),
                          cell("balanced_accuracy"), cell("accuracy"))  # fmt: skip
            console.print(table)

        row: dict[str, Any] = {
            "run_id": run.run_id, "probe_id": outcome.probe_id, "feature_set_id": feature_set_id, "layer": layer,
            "probabilities": tower.rule, "templates": prompts.source, "n_test": len(outcome.test_hashes),
        }  # fmt: skip
        for key in ("macro_auc", "balanced_accuracy", "macro_f1", "accuracy"):
            entry = outcome.metrics.get(key) or {}
            row.update({key: entry.get("value"), f"{key}_ci_low": entry.get("ci_low"),
                        f"{key}_ci_high": entry.get("ci_high")})  # fmt: skip
        emit(fmt, out, rows=[row], document=document, show=show)
