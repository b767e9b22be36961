"""``zeroshot``: a task's test images classified by class prompts through a CLIP-family model's text tower."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medprobe.schemas.vocab import ComputeDType, TestSplit
from medprobe.trainer.defaults import N_BOOT
from medprobe.workflows.common import StoreArg, choice, open_store, optional_choice
from medprobe.workflows.probes import metrics_doc
from medprobe.workflows.results import METRIC_KEYS, Result, metric_columns


@dataclass
class ZeroshotResult(Result):
    """A zero-shot run: the test metrics with CIs, the prompts used and how probabilities were formed."""

    run_id: str
    kind: str
    method: str
    model: str
    feature_set_id: str
    layer: int
    dataset: str
    task: str
    class_names: list[str]
    probe_id: str
    probabilities: str
    logit_scale: float
    logit_bias: float | None
    templates: str
    prompts: dict[str, list[str]]
    n_test: int
    images_extracted: int
    test: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def macro_auc(self) -> float | None:
        """Test macro AUC."""
        return (self.test.get("macro_auc") or {}).get("value")

    def rows(self) -> list[dict[str, Any]]:
        """One row: the run, its probabilities rule and the test metrics with CIs."""
        return [{"run_id": self.run_id, "probe_id": self.probe_id, "feature_set_id": self.feature_set_id,
                 "layer": self.layer, "probabilities": self.probabilities, "templates": self.templates,
                 "n_test": self.n_test, **metric_columns(self.metrics, METRIC_KEYS)}]  # fmt: skip


def zeroshot(
    *, task: str, model: str, dataset: str | None = None, templates: str = "generic",
    test_split: str | TestSplit = TestSplit.test, allow_missing: bool = False, n_boot: int = N_BOOT,
    boot_seed: int = 0, device: str | None = None, dtype: str | ComputeDType | None = None,
    allow_pickle: bool = False, no_progress: bool = False, store: StoreArg = None,
) -> ZeroshotResult:  # fmt: skip
    """Zero-shot classification (CLIP, SigLIP, open_clip): image embeddings vs class prompts, no training.

    Image embeddings are extracted once into the store (the model's last layer, float32) and text embeddings are
    kept too, so a rerun costs nothing; results land in ``probe_results`` (method zeroshot) beside the probes.

    Args:
        task, dataset: the task (and its dataset when several have it); model: a CLIP-family model spec.
        templates: a built-in template set (generic, xray, pathology, dermatology, fundus) or a JSON file.
        test_split: the split scored; allow_missing: score the test images that have embeddings.
        n_boot, boot_seed: bootstrap replicates of the CIs and their seed.
        device, dtype, allow_pickle: how the model loads and runs; no_progress: no progress bar.
        store: a store URL or an open ``FeatureStore``.
    """
    from medprobe.adapters.contrastive import load_contrastive, text_embeddings
    from medprobe.extractor.pipeline import ExtractOptions, extract, resolve_request
    from medprobe.featurestore import start_run
    from medprobe.trainer.data import probe_kind, resolve_task
    from medprobe.trainer.experiment import ExperimentSpec
    from medprobe.trainer.zeroshot import class_prompts, run_zeroshot

    st = open_store(store)
    split = choice(TestSplit, test_split, "--test-split").value
    compute = optional_choice(ComputeDType, dtype, "--dtype")
    task_row = resolve_task(st, task, dataset)
    kind = probe_kind(task_row)
    class_prompts(task_row.class_names, kind, templates, task=task_row.task, negatives=False)  # fail early
    options = ExtractOptions.model_validate({
        "dataset": task_row.dataset, "model": model, "layers": "-1", "split": [split], "device": device,
        "dtype": None if compute is None else compute.value, "allow_pickle": allow_pickle, "storage_dtype": "float32",
    })  # fmt: skip
    adapter, tower = load_contrastive(model, device=options.resolved_device(), dtype=options.resolved_dtype(),
                                      allow_pickle=allow_pickle)  # fmt: skip
    prompts = class_prompts(task_row.class_names, kind, templates, task=task_row.task,
                            negatives=tower.rule == "softmax")  # fmt: skip
    request = resolve_request(adapter, options)
    feature_set_id = next(iter(request.feature_set_ids.values()))
    layer = request.layers[0]
    extracted = extract(st, options, adapter=adapter, show_progress=not no_progress)
    texts = prompts.texts()
    emb = dict(zip(texts, text_embeddings(st, tower, texts), strict=True))
    spec = ExperimentSpec(feature_set_id=feature_set_id, task=task_row, layers=[layer], method="zeroshot",
                          test_split=split, allow_missing=allow_missing, n_boot=n_boot, seed=boot_seed)  # fmt: skip
    params = {"model": model, "feature_set_id": feature_set_id, "layer": layer, "dataset": task_row.dataset,
              "task": task_row.task, "templates": templates, "test_split": split, "text_model_key": tower.key,
              "n_boot": n_boot, "boot_seed": boot_seed}  # fmt: skip
    with start_run(st, "zeroshot", params) as run:
        outcome = run_zeroshot(st, spec, run.run_id, prompts, emb, logit_scale=tower.logit_scale,
                               logit_bias=tower.logit_bias, record={"model_id": model, "text_model_key": tower.key})
        run.summary.update({"probe_id": outcome.probe_id, "n_test": len(outcome.test_hashes),
                            "test_macro_auc": outcome.metrics["macro_auc"]["value"]})  # fmt: skip
    return ZeroshotResult(
        run_id=run.run_id, kind="zeroshot", method="zeroshot", model=model, feature_set_id=feature_set_id,
        layer=layer, dataset=task_row.dataset, task=task_row.task, class_names=list(task_row.class_names),
        probe_id=outcome.probe_id, probabilities=tower.rule, logit_scale=tower.logit_scale,
        logit_bias=tower.logit_bias, templates=prompts.source,
        prompts=dict(zip(task_row.class_names, prompts.positive, strict=True)), n_test=len(outcome.test_hashes),
        images_extracted=int(extracted.get("images_committed", 0)), test=metrics_doc(outcome.metrics),
        metrics=outcome.metrics,
    )  # fmt: skip
