"""Side-by-side, paired comparison of probes that scored the same test images."""

from __future__ import annotations

from collections.abc import Sequence

from medprobe.schemas.tables import ProbeComparisonRow, TaskRow
from medprobe.trainer.bootstrap import N_BOOT, paired_comparison
from medprobe.trainer.experiment import ProbeOutcome
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
) -> list[ProbeComparisonRow]:
    """Each probe against the first (the reference), paired on the same test images, for every metric."""
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
    return rows
