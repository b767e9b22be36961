"""Side-by-side, paired comparison of probes that scored the same test images."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from medprobe.schemas.tables import ProbeComparisonRow, TaskRow
from medprobe.trainer.bootstrap import N_BOOT, paired_comparison
from medprobe.trainer.delong import delong_test
from medprobe.trainer.experiment import ProbeOutcome
from medprobe.trainer.external import ExternalResult
from medprobe.trainer.metrics import one_vs_rest
from medprobe.trainer.protocol import LOWER_IS_BETTER


def best_layer(outcomes: Sequence[ProbeOutcome]) -> ProbeOutcome:
    """Among the probes of the largest training fraction (1 unless a label-efficiency run left it out), the one whose
    chosen C has the best mean selection score (training rows only)."""
    largest = max(o.setting.fraction for o in outcomes)
    full = [o for o in outcomes if o.setting.fraction == largest]
    scored = [o for o in full if o.cv_mean is not None]
    if not scored:
        return full[0]
    sign = -1.0 if scored[0].select_by in LOWER_IS_BETTER else 1.0
    return max(scored, key=lambda o: (sign * (o.cv_mean or 0.0), -o.layer))


def compare_probes(
    run_id: str,
    task: TaskRow,
    probes: Sequence[tuple[str, ProbeOutcome]],
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    delong: bool = False,
) -> list[ProbeComparisonRow]:
    """Each probe against the first (the reference), paired on the same test images, for every metric; with
    ``delong``, DeLong's test beside the bootstrap: on the binary AUC row, and one ``auc:<class>`` row per class
    (one-vs-rest) for multiclass and multilabel tasks."""
    (ref_fs, ref), rows = probes[0], []
    for fs, other in probes[1:]:
        if other.test_hashes != ref.test_hashes:
            raise ValueError("paired comparison needs the same test images in the same order")
        result = paired_comparison(
            other.y_test, other.proba, ref.proba, ref.kind, list(task.class_names), n_boot=n_boot, seed=seed
        )
        for metric, r in result.items():
            rows.append(
                ProbeComparisonRow(
                    run_id=run_id,
                    probe_a=other.probe_id,
                    probe_b=ref.probe_id,
                    feature_set_a=fs,
                    feature_set_b=ref_fs,
                    layer_a=other.layer,
                    layer_b=ref.layer,
                    dataset=task.dataset,
                    task=task.task,
                    metric=metric,
                    value_a=r.value_a,
                    value_b=r.value_b,
                    diff=r.diff,
                    ci_low=r.ci_low,
                    ci_high=r.ci_high,
                    p_bootstrap=r.p_bootstrap,
                    p_ttest=r.p_ttest,
                    n_test=len(ref.test_hashes),
                    n_boot=n_boot,
                )
            )
        if delong:
            _add_delong(rows, other, ref, list(task.class_names))
    return rows


def _add_delong(rows: list[ProbeComparisonRow], a: ProbeOutcome, b: ProbeOutcome, class_names: list[str]) -> None:
    """DeLong's p-value on the pair's binary AUC row, or an ``auc:<class>`` row per class (one-vs-rest)."""
    truth = one_vs_rest(a.y_test, a.kind, len(class_names))
    if a.kind == "binary":
        test = delong_test(truth[:, 1], a.proba[:, 1], b.proba[:, 1])
        for i, row in enumerate(rows):
            if row.probe_a == a.probe_id and row.metric == "macro_auc" and test is not None:
                rows[i] = row.model_copy(update={"p_delong": test.p_value})
        return
    template = next(r for r in rows if r.probe_a == a.probe_id)
    for k, name in enumerate(class_names):
        test = delong_test(truth[:, k], a.proba[:, k], b.proba[:, k])
        if test is None:
            continue  # the test rows hold one side of this class only: no AUC
        rows.append(template.model_copy(update={
            "metric": f"auc:{name}", "value_a": test.auc_a, "value_b": test.auc_b, "diff": test.diff,
            "ci_low": test.ci_low, "ci_high": test.ci_high, "p_bootstrap": None, "p_ttest": None,
            "p_delong": test.p_value,
        }))  # fmt: skip


def compare_external(
    run_id: str, task: TaskRow, chosen: Sequence[tuple[str, ProbeOutcome]], scored: Sequence[ExternalResult], *,
    n_boot: int = N_BOOT, seed: int = 0, delong: bool = False,
) -> list[ProbeComparisonRow]:  # fmt: skip
    """The paired comparison of the probes on one external dataset: on the labelled images every probe scored
    (an image one feature set lacks is left out of all); the rows name the external dataset."""
    common = set.intersection(*(set(e.image_hashes) for e in scored))
    if not common:
        return []
    outcomes = []
    for (fs, o), e in zip(chosen, scored, strict=True):
        keep = [i for i, h in enumerate(e.image_hashes) if h in common]
        assert e.y is not None and e.proba is not None  # there are labelled images
        outcomes.append((fs, dataclasses.replace(o, probe_id=e.probe_id, test_hashes=[e.image_hashes[i] for i in keep],
                                                 y_test=e.y[keep], proba=e.proba[keep])))  # fmt: skip
    rows = compare_probes(run_id, task, outcomes, n_boot=n_boot, seed=seed, delong=delong)
    return [r.model_copy(update={"dataset": scored[0].dataset}) for r in rows]
