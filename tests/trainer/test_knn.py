"""Weighted kNN probabilities equal scikit-learn's KNeighborsClassifier with the same cosine metric and weights."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.neighbors import KNeighborsClassifier

from medprobe.errors import InvalidInputError
from medprobe.trainer.knn import DINOV2_TEMPERATURE, knn_proba

T = DINOV2_TEMPERATURE


def _sklearn(train, y, query, k):
    def weights(distances):  # cosine distance = 1 - cosine similarity
        return np.exp((1.0 - distances) / T)

    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute", weights=weights).fit(train, y)
    return clf.predict_proba(query)


@pytest.mark.parametrize(("n_classes", "k"), [(2, 1), (2, 10), (5, 20), (5, 200)])
def test_multiclass_equals_sklearn(n_classes: int, k: int) -> None:
    rng = np.random.default_rng(n_classes * 100 + k)
    y = rng.integers(0, n_classes, 300)
    train = rng.normal(size=(300, 16)) + 0.3 * y[:, None]
    query = rng.normal(size=(40, 16))
    ours = knn_proba(train, np.eye(n_classes)[y], query, k, device="cpu")
    np.testing.assert_allclose(ours, _sklearn(train, y, query, k), atol=1e-6)


def test_multilabel_is_each_findings_weighted_positive_share() -> None:
    rng = np.random.default_rng(1)
    Y = (rng.random((250, 3)) < [0.2, 0.5, 0.05]).astype(int)
    train, query = rng.normal(size=(250, 12)), rng.normal(size=(30, 12))
    ours = knn_proba(train, Y, query, 15, device="cpu")
    for j in range(3):
        np.testing.assert_allclose(ours[:, j], _sklearn(train, Y[:, j], query, 15)[:, 1], atol=1e-6)


@given(st.integers(1, 50), st.integers(1, 4096))
@settings(max_examples=25, deadline=None)
def test_chunking_does_not_change_the_answer(k: int, budget: int) -> None:
    rng = np.random.default_rng(k)
    y = rng.integers(0, 3, 60)
    train, query = rng.normal(size=(60, 8)), rng.normal(size=(17, 8))
    whole = knn_proba(train, np.eye(3)[y], query, k, device="cpu")
    chunked = knn_proba(train, np.eye(3)[y], query, k, device="cpu", budget_bytes=budget)
    np.testing.assert_allclose(chunked, whole, atol=1e-12)


def test_bad_input() -> None:
    train, y = np.ones((5, 3)), np.eye(2)[[0, 1, 0, 1, 0]]
    with pytest.raises(InvalidInputError, match="--k 6: choose 1 to 5"):
        knn_proba(train, y, train, 6, device="cpu")
    with pytest.raises(InvalidInputError, match="NaN"):
        knn_proba(np.full((5, 3), np.nan), y, train, 2, device="cpu")


def test_k_is_chosen_on_training_folds_only_and_matches_a_brute_force_cv(monkeypatch) -> None:
    from sklearn.metrics import roc_auc_score

    from medprobe.trainer import knn
    from medprobe.trainer.protocol import cv_splits, cv_strata, stratify_key

    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 400)
    X = rng.normal(size=(400, 10)) + 0.4 * y[:, None]
    groups = np.arange(400) // 2
    train = np.arange(300)  # rows 300.. are the test rows: never passed in
    seen: list[int] = []
    real = knn.knn_proba

    def spy(train_x, targets, query, k, **kw):
        seen.append(len(train_x) + len(query))
        return real(train_x, targets, query, k, **kw)

    monkeypatch.setattr(knn, "knn_proba", spy)
    k, scores = knn.choose_k(X[train], y[train], np.eye(3)[y[train]], "multiclass", 3, groups=groups[train],
                             k_grid=(5, 25, 125), seed=0)  # fmt: skip
    monkeypatch.undo()  # the brute-force reference below uses the real function
    assert set(seen) == {300}  # every call splits the 300 training rows, nothing more
    splits, _ = cv_splits(cv_strata(stratify_key(y[train], "multiclass"), "multiclass", 5), groups[train], 5, 0)
    brute = {}
    for kk in (5, 25, 125):
        aucs = [roc_auc_score(y[train][va], real(X[train][tr], np.eye(3)[y[train][tr]], X[train][va], kk, device="cpu"),
                          multi_class="ovr")
                for tr, va in splits]  # fmt: skip
        brute[kk] = np.mean(aucs)
        np.testing.assert_allclose(scores[str(kk)], aucs, atol=1e-9)  # sklearn's AUC on our kNN probabilities
    assert k == max(brute, key=lambda kk: (brute[kk], -kk))
