"""One rule for label cells: numbers by value, empty and NaN missing; a CSV with an unbalanced quote is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import medprobe
from medprobe.errors import InvalidInputError
from medprobe.ingestion.records import canonical_label


@pytest.mark.parametrize(
    ("cell", "label"),
    [("1", "1"), ("1.0", "1"), (" 01 ", "1"), ("0.50", "0.5"), ("-2.0", "-2"), ("1e3", "1000"), ("", None),
     ("  ", None), ("NaN", None), ("nan", None), ("KL2", "KL2"), ("yes", "yes"), ("inf", "inf")],
)  # fmt: skip
def test_the_label_rule_table(cell: str, label: str | None) -> None:
    assert canonical_label(cell) == label


@given(st.integers(min_value=-10**6, max_value=10**6))
def test_an_integer_is_one_class_however_it_is_written(n: int) -> None:
    assert canonical_label(str(n)) == canonical_label(f"{n}.0") == canonical_label(f" {float(n)!r} ") == str(n)


def _images(tmp_path: Path, n: int) -> list[str]:
    names = []
    for i in range(n):
        name = f"i{i}.png"
        Image.fromarray(np.full((8, 8, 3), i * 20, dtype=np.uint8)).save(tmp_path / name)
        names.append(name)
    return names


def test_mixed_spellings_of_one_class_make_one_class_and_nan_is_missing(tmp_path: Path) -> None:
    names = _images(tmp_path, 8)
    cells = ["0", "1", "0.0", "1.0", "0", "1", "NaN", "1.0"]
    (tmp_path / "m.csv").write_text("path,label,split\n" + "".join(
        f"{n},{c},{'test' if i % 4 == 0 else 'train'}\n" for i, (n, c) in enumerate(zip(names, cells, strict=True))))
    store = str(tmp_path / "s")
    result = medprobe.ingest(source=str(tmp_path / "m.csv"), layout="csv", dataset="d", label_column="label",
                             store=store)  # fmt: skip
    assert result.summary.failures_by_reason == {"missing_label": 1}  # a failure row names the row
    st_ = medprobe.open_store(store)
    (path,) = st_.sql("SELECT path FROM failures WHERE reason = 'missing_label'").column(0).to_pylist()
    assert path.endswith("m.csv:8")
    assert st_.sql("SELECT class_names FROM tasks").column(0).to_pylist() == [["0", "1"]]  # not 4 classes, no NaN
    labels = st_.sql("SELECT labels FROM dataset_images ORDER BY source_path").column(0).to_pylist()
    assert labels.count('{"label":"0"}') + labels.count('{"label": "0"}') == 3
    assert sum("label" not in s for s in labels) == 1  # the NaN row is a member without that label


def test_an_unbalanced_quote_is_refused_naming_the_line(tmp_path: Path) -> None:
    names = _images(tmp_path, 3)
    (tmp_path / "m.csv").write_text(f"path,label\n{names[0]},a\n\"{names[1]},b\n{names[2]},a\n")
    with pytest.raises(InvalidInputError, match=r"m\.csv, line 3: cannot read as CSV"):
        medprobe.ingest(source=str(tmp_path / "m.csv"), layout="csv", dataset="d", label_column="label",
                        store=str(tmp_path / "s"))  # fmt: skip
