"""``predict``: a stored probe applied unchanged to a dataset (images ingested later, another site's collection)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medprobe.errors import StoreWarning
from medprobe.featurestore import start_run
from medprobe.trainer.defaults import N_BOOT
from medprobe.workflows.common import ListArg, StoreArg, open_store, split_list
from medprobe.workflows.results import METRIC_KEYS, Result, metric_columns

if TYPE_CHECKING:
    import numpy as np


@dataclass
class PredictResult(Result):
    """A stored probe's predictions on a dataset: the new ``probe_results`` row (``probe_id``, naming the probe it
    applies in ``applied_from``), how many images were scored and how many still need ``extract``, and metrics with
    CIs over the images that have a label for the task (None when none has)."""

    run_id: str
    probe_id: str
    applied_from: str
    dataset: str
    task: str
    feature_set_id: str
    layer: int
    n_members: int
    n_predicted: int
    n_missing_features: int
    n_labelled: int
    metrics: dict[str, Any] | None
    class_names: list[str]
    image_hashes: list[str] = field(repr=False, default_factory=list)
    probabilities: np.ndarray | None = field(repr=False, default=None)

    def rows(self) -> list[dict[str, Any]]:
        """One row per scored image: its hash and the probability of each class."""
        if self.probabilities is None:
            return []
        return [{"image_hash": h, **{f"p_{c}": float(p) for c, p in zip(self.class_names, ps, strict=True)}}
                for h, ps in zip(self.image_hashes, self.probabilities, strict=True)]  # fmt: skip

    def metric_row(self) -> dict[str, Any]:
        """The headline metrics with their CIs (empty without labels)."""
        return metric_columns(self.metrics, METRIC_KEYS) if self.metrics else {}


def predict(
    *, probe: str, dataset: str, split: ListArg = None, subgroup: ListArg = None, n_boot: int = N_BOOT,
    boot_seed: int = 0, store: StoreArg = None,
) -> PredictResult:  # fmt: skip
    """Apply the stored probe ``probe`` (its weights and standardisation) to the images of ``dataset``.

    The dataset's rows of the probe's feature set and layer are scored; images not extracted yet are counted (run
    ``extract`` with the probe's model to add them). Predictions are written under a new probe id whose
    ``probe_results`` row names the probe it applies (``applied_from``) and the dataset it was scored on; when the
    dataset has the probe's task (the same class names, else refused), metrics with bootstrap CIs are computed over
    the labelled images. Applied to the training run's own test rows it gives that run's stored probabilities.

    Args:
        probe: a probe id of ``probe_results`` (a fitted probe, not a kNN or zero-shot row).
        dataset: the dataset to score; split: only these splits (default: all).
        subgroup: metadata columns scored per group over the labelled images (``sex``, ``age:4``); numeric bins are
            the probe's own when it was evaluated with that subgroup, else the quantiles of this dataset's images.
        n_boot, boot_seed: bootstrap replicates and their seed for the CIs.
        store: a store URL or an open ``FeatureStore``.
    """
    from medprobe.trainer.apply import apply_probe, write_applied
    from medprobe.trainer.stored import load_probe

    st = open_store(store)
    stored = load_probe(st, probe)
    splits = split_list(split)
    subgroups = split_list(subgroup)
    params = {"probe": probe, "dataset": dataset, "split": splits, "subgroup": subgroups, "n_boot": n_boot,
              "boot_seed": boot_seed}  # fmt: skip
    with start_run(st, "predict", params) as run:
        applied = apply_probe(st, stored, dataset, splits=splits, n_boot=n_boot, seed=boot_seed, subgroups=subgroups)
        if applied.n_missing_features:
            warnings.warn(
                f"{applied.n_missing_features} of {applied.n_members} images of {dataset!r} have no features in "
                f"{stored.feature_set_id} at layer {stored.layer} yet and are not scored; run `medprobe extract -d "
                f"{dataset}` with the probe's model to add them",
                StoreWarning,
                stacklevel=2,
            )
        probe_id = write_applied(st, applied, run.run_id)
        result = PredictResult(
            run_id=run.run_id, probe_id=probe_id, applied_from=probe, dataset=dataset, task=stored.task,
            feature_set_id=stored.feature_set_id, layer=stored.layer, n_members=applied.n_members,
            n_predicted=len(applied.image_hashes), n_missing_features=applied.n_missing_features,
            n_labelled=applied.labelled, metrics=applied.metrics, class_names=list(stored.class_names),
            image_hashes=applied.image_hashes, probabilities=applied.proba,
        )  # fmt: skip
        run.summary = {k: v for k, v in result.to_dict().items() if k != "metrics"}
    return result
