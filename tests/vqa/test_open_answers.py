"""The open-answer normaliser and metrics against a table computed by hand."""

from __future__ import annotations

import pytest

from medprobe.errors import InvalidInputError
from medprobe.vqa.open_answers import normalise, open_scores

NORMALISED = [
    ("The Left Lung.", "left lung"),
    ("  an   X-ray ", "x ray"),
    ("Yes!", "yes"),
    ("2.0 cm", "2 cm"),
    ("two cm", "2 cm"),
    ("02 cm", "2 cm"),
    ("3.50", "3.5"),
    ("T2-weighted MRI", "t2 weighted mri"),
    ("end of sentence.", "end of sentence"),
    ("the", ""),
]


@pytest.mark.parametrize(("text", "expected"), NORMALISED)
def test_the_normaliser_table(text: str, expected: str) -> None:
    assert normalise(text) == expected


# prediction, reference -> exact match, token F1, token recall, yes/no (by hand)
SCORES = [
    ("The left lung", "left lung", True, 1.0, 1.0, None),
    ("left lower lung", "left lung", False, 0.8, 1.0, None),  # P 2/3, R 1: F1 0.8
    ("lung", "left lung", False, 2 / 3, 0.5, None),  # P 1, R 1/2
    ("Yes, there is an effusion.", "yes", False, 0.4, 1.0, True),  # tokens: yes there is effusion -> P 1/4, R 1
    ("No.", "yes", False, 0.0, 0.0, False),
    ("no", "No", True, 1.0, 1.0, True),
    ("two", "2", True, 1.0, 1.0, None),
    ("kidney kidney", "kidney", False, 2 / 3, 1.0, None),  # multiplicity: overlap 1, P 1/2, R 1
    (None, "brain", False, 0.0, 0.0, None),
    ("", "yes", False, 0.0, 0.0, False),
]


@pytest.mark.parametrize(("prediction", "reference", "em", "f1", "recall", "yes_no"), SCORES)
def test_the_open_metrics_table(prediction, reference, em, f1, recall, yes_no) -> None:
    got = open_scores(prediction, reference)
    assert got["exact_match"] is em and got["yes_no"] is yes_no
    assert got["token_f1"] == pytest.approx(f1) and got["token_recall"] == pytest.approx(recall)


def test_a_reference_that_normalises_to_nothing_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="normalises to nothing"):
        open_scores("anything", "The.")
