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
    np.testing.assert_allclose(chunked, whole, atol=1e-5)  # float32 similarities: block shapes round differently


def test_bad_input() -> None:
    train, y = np.ones((5, 3)), np.eye(2)[[0, 1, 0, 1, 0]]
    with pytest.raises(InvalidInputError, match="--k 6: choose 1 to 5"):
        knn_proba(train, y, train, 6, device="cpu")
    with pytest.raises(InvalidInputError, match="NaN"):
        knn_proba(np.full((5, 3), np.nan), y, train, 2, device="cpu")
