"""DeLong's test against a reference written from the paper's formulas (pairwise kernel, no ranks), and `compare
--test delong` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from medprobe.trainer.delong import delong_test
from tests.helpers.cli import run_cli
from tests.helpers.features import fill_store


def _reference(truth: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """DeLong et al. 1988: psi(X, Y) = 1, 1/2, 0; V10(X_i) = mean_j psi(X_i, Y_j); V01(Y_j) = mean_i psi(X_i, Y_j);
    S10, S01 the sample covariances of the components; var(A - B) = (S10 / m + S01 / n) contrasted."""
    def components(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X, Y = s[truth == 1], s[truth == 0]
        psi = np.array([[1.0 if x > y else 0.5 if x == y else 0.0 for y in Y] for x in X])
        return psi.mean(1), psi.mean(0)

    a10, a01 = components(a)
    b10, b01 = components(b)
    m, n = len(a10), len(a01)
    s10 = np.cov(np.vstack([a10, b10]))
    s01 = np.cov(np.vstack([a01, b01]))
    c = np.array([1.0, -1.0])
    var = c @ (s10 / m + s01 / n) @ c
    z = (a10.mean() - b10.mean()) / np.sqrt(var)
    return float(a10.mean()), float(b10.mean()), float(2 * stats.norm.sf(abs(z)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_equals_the_papers_formulas(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = (rng.random(80) < 0.4).astype(int)
    a = truth * 0.8 + rng.normal(size=80)
    b = np.round(truth * 0.5 + rng.normal(size=80), 1)  # rounded: ties count one half
    got = delong_test(truth, a, b)
    auc_a, auc_b, p = _reference(truth, a, b)
    assert got is not None
    assert (got.auc_a, got.auc_b, got.p_value) == pytest.approx((auc_a, auc_b, p), abs=1e-12)
    assert delong_test(np.zeros(5), a[:5], b[:5]) is None  # one class only: undefined


def _compare_with_delong(tmp_path, capsys, task: str):
    """Two synthetic feature sets compared with --test delong on ``task``: the store and the JSON output."""
    from medprobe.featurestore import FeatureStore

    store = FeatureStore.open(str(tmp_path / "s"))
    fill_store(store)
    fill_store(store, fs_id="fs-other", seed=0, offset=0.5)
    code, out, err = run_cli(capsys, "compare", "-t", task, "--feature-set", "fs-synth,fs-other", "-l", "3,1",
                             "--c-grid", "0.1,1", "--cv", "3", "--n-boot", "50", "--test", "delong", "-f", "json",
                             "-s", store.url)  # fmt: skip
    assert code == 0, err
    return store, out


def test_compare_with_delong_adds_per_class_rows(tmp_path, capsys) -> None:
    store, out = _compare_with_delong(tmp_path, capsys, "grade")
    rows = json.loads(out)["comparisons"]
    per_class = [r for r in rows if r["metric"].startswith("auc:")]
    assert {r["metric"] for r in per_class} == {"auc:none", "auc:mild", "auc:severe"}
    assert all(0 <= r["p_delong"] <= 1 and r["ci_low"] < r["diff"] < r["ci_high"] for r in per_class)
    stored = store.sql("SELECT count(*) FROM probe_comparisons WHERE p_delong IS NOT NULL").column(0)[0].as_py()
    assert stored == 3


def test_a_binary_comparison_puts_delong_on_its_auc_row(tmp_path, capsys) -> None:
    store, out = _compare_with_delong(tmp_path, capsys, "severe")
    doc = json.loads(out)
    (auc,) = [r for r in doc["comparisons"] if r["metric"] == "macro_auc"]
    a, b = (store.sql("SELECT image_hash, y_true, probabilities FROM predictions WHERE probe_id = ? ORDER BY "
                      "image_hash", [p]).to_pylist() for p in (auc["probe_a"], auc["probe_b"]))  # fmt: skip
    truth = np.array([int(r["y_true"]) for r in a])
    expected = delong_test(truth, np.array([r["probabilities"][1] for r in a], dtype=np.float64),
                           np.array([r["probabilities"][1] for r in b], dtype=np.float64))  # fmt: skip
    assert expected is not None and auc["p_delong"] == pytest.approx(expected.p_value, rel=1e-4)
    assert not [r for r in doc["comparisons"] if r["metric"].startswith("auc:")]
