"""``ingest`` (a collection into a dataset: images by sha256, labels, tasks, splits) and ``datasets``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medprobe.errors import InvalidInputError
from medprobe.schemas.vocab import Layout, NeoplasticShare, Verify
from medprobe.workflows.common import ListArg, StoreArg, choice, open_store, pairs, split_list
from medprobe.workflows.results import Result, jsonable

if TYPE_CHECKING:
    from medprobe.ingestion.overview import DatasetOverview
    from medprobe.ingestion.pipeline import IngestSummary


@dataclass
class IngestResult(Result):
    """What an ingest found and wrote (``summary`` holds every count; the main ones are attributes)."""

    dataset: str
    run_id: str | None
    records: int
    images_new: int
    memberships_new: int
    failures: int
    summary: IngestSummary = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Every count of the ingest, with its rates."""
        return jsonable(self.summary.to_json())

    def rows(self) -> list[dict[str, Any]]:
        """One row: the summary."""
        return [self.to_dict()]


class IngestFailuresError(InvalidInputError):
    """``strict`` and some files could not be ingested (or a shipped split leaks patients); ``result`` says what
    was ingested nonetheless."""

    def __init__(self, message: str, result: IngestResult) -> None:
        super().__init__(message)
        self.result = result


def ingest(
    *, source: str, dataset: str, layout: str | Layout | None = None, path_column: str | None = None,
    label_column: ListArg = None, metadata_column: ListArg = None, split_column: str | None = None,
    group_column: str | None = None,
    root: str | None = None, task: str | None = None, task_type: ListArg = None, metric: ListArg = None,
    class_names: ListArg = None, separator: str | None = None, fold_splits: ListArg = None,
    neoplastic_share: str | NeoplasticShare = NeoplasticShare.area, test_fraction: float = 0.2,
    val_fraction: float = 0.1, split_seed: int = 0, min_positives: int = 50, copy: bool = False,
    verify: str | Verify = Verify.structure, max_pixels: int = 89_478_485, threads: int | None = None,
    strict: bool = False, no_progress: bool = False, store: StoreArg = None,
) -> IngestResult:  # fmt: skip
    """Ingest a collection: images by sha256, labels, tasks, splits; unreadable files become ``failures`` rows.

    A dataset may hold several sources (one ingest each). Re-ingesting a source makes the dataset's members from
    it equal to it: members it no longer holds, or holds only unreadable, are retired (history kept), a known
    image whose file is gone is re-pointed to where the source has it now, corrected labels win.

    Args:
        source: a folder, manifest or .npz; dataset: the dataset's name in the store.
        layout: the source's published layout (``csv``, ``knee``, ``imagefolder``, ``ham10000``, ...; required).
        path_column, label_column, split_column, group_column, root, separator: csv manifests.
        metadata_column: columns kept as per-image metadata (csv manifests; layouts that ship metadata keep theirs):
            typed values (a number stays a number, empty is null), queryable as ``metadata->>'age'``.
        task: the task name of single-task layouts; task_type: ``TASK=binary|multiclass|ordinal|multilabel``;
        metric: ``TASK=macro_f1|macro_auc``; class_names: class names in label-index order.
        fold_splits, neoplastic_share: pannuke.
        test_fraction, val_fraction, split_seed: generated (patient-grouped) splits.
        min_positives: multilabel findings with fewer training positives are dropped.
        copy: copy image bytes into the store; verify: how hard each image is checked; max_pixels: refuse larger.
        threads: hashing threads; strict: raise :class:`IngestFailuresError` when any file fails.
        no_progress: no progress bar; store: a store URL or an open ``FeatureStore`` (created if missing).
    """
    from medprobe.ingestion.pipeline import IngestOptions
    from medprobe.ingestion.pipeline import ingest as run_ingest
    from medprobe.ingestion.records import FormatOptions
    from medprobe.ingestion.splits import SplitPlan, normalise_split

    if layout is None:
        raise InvalidInputError(f"ingest needs --layout, one of: {', '.join(x.value for x in Layout)}")
    chosen = choice(Layout, layout, "--layout")
    folds = {k: normalise_split(v) for k, v in pairs(fold_splits, "--fold-splits").items()}
    format_options = FormatOptions(
        path_column=path_column, label_columns=tuple(split_list(label_column)), split_column=split_column,
        group_column=group_column, root=root, task=task, task_types=pairs(task_type, "--task-type"),
        metrics=pairs(metric, "--metric"), class_names=tuple(split_list(class_names)), multilabel_separator=separator,
        fold_splits=folds, neoplastic_share=choice(NeoplasticShare, neoplastic_share, "--neoplastic-share").value,
        metadata_columns=tuple(split_list(metadata_column)),
    )  # fmt: skip
    run_params = {
        "source": source, "dataset": dataset, "layout": chosen.value, "path_column": path_column,
        "label_column": split_list(label_column), "metadata_column": split_list(metadata_column),
        "split_column": split_column, "group_column": group_column,
        "root": root, "task": task, "task_type": split_list(task_type), "metric": split_list(metric),
        "class_names": split_list(class_names), "separator": separator, "fold_splits": split_list(fold_splits),
        "neoplastic_share": format_options.neoplastic_share, "test_fraction": test_fraction,
        "val_fraction": val_fraction, "split_seed": split_seed, "min_positives": min_positives, "copy": copy,
        "verify": choice(Verify, verify, "--verify").value, "max_pixels": max_pixels, "threads": threads,
        "strict": strict,
    }  # recorded in `runs` under the options' names
    options = IngestOptions(
        copy=copy, verify=choice(Verify, verify, "--verify"), max_pixels=max_pixels, workers=threads,
        split_plan=SplitPlan(test_fraction=test_fraction, val_fraction=val_fraction, seed=split_seed),
        min_positives=min_positives, show_progress=not no_progress, run_params=run_params,
    )  # fmt: skip
    summary = run_ingest(open_store(store, create=True), source, chosen.value, dataset, format_options, options)
    result = IngestResult(dataset=summary.dataset, run_id=summary.run_id, records=summary.records,
                          images_new=summary.images_new, memberships_new=summary.memberships_new,
                          failures=summary.failures, summary=summary)  # fmt: skip
    if strict and summary.failures:
        raise IngestFailuresError(f"{summary.failures} file(s) or row(s) could not be ingested (--strict)", result)
    if strict and summary.groups_across_splits:
        raise IngestFailuresError(
            f"{len(summary.groups_across_splits)} patient group(s) are in more than one split (--strict)", result
        )
    return result


@dataclass
class DatasetsResult(Result):
    """Datasets: tasks, split sizes and class counts per split."""

    datasets: list[dict[str, Any]]
    overviews: list[DatasetOverview] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """``{"datasets": [...]}``."""
        return jsonable({"datasets": self.datasets})

    def rows(self) -> list[dict[str, Any]]:
        """One row per dataset."""
        return list(self.datasets)


def datasets(*, dataset: str | None = None, store: StoreArg = None) -> DatasetsResult:
    """List the datasets of ``store`` (or only ``dataset``): tasks, split sizes and class counts per split."""
    from medprobe.ingestion.overview import dataset_overviews

    overviews = dataset_overviews(open_store(store), dataset)
    return DatasetsResult(datasets=[dataclasses.asdict(ov) for ov in overviews], overviews=overviews)
