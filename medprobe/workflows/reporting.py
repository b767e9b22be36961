"""``report``: PNG plots and a Markdown summary of train/sweep/compare/zeroshot runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medprobe.workflows.common import StoreArg, check_out_folder, open_store
from medprobe.workflows.results import Result


@dataclass
class ReportResult(Result):
    """The files a report wrote (PNGs, then summary.md) and why some runs may be incomplete."""

    out: str
    paths: list[str]
    warnings: list[str]

    def rows(self) -> list[dict[str, str]]:
        """One row per file written."""
        return [{"path": p} for p in self.paths]


def report(*, run_ids: Sequence[str], out: str = "medprobe-report", store: StoreArg = None) -> ReportResult:
    """PNG plots (layer curves, ROC, label efficiency, comparisons) and a Markdown summary of runs.

    Args:
        run_ids: run ids of train/sweep/compare/zeroshot runs.
        out: the folder for the PNGs and summary.md.
        store: a store URL or an open ``FeatureStore``.
    """
    from medprobe.trainer.report import incomplete_runs, write_report

    check_out_folder(out)
    st = open_store(store)
    ids = list(run_ids)
    warnings = incomplete_runs(st, ids)
    paths = write_report(st, ids, out)
    return ReportResult(out=out, paths=[str(p) for p in paths], warnings=warnings)
