"""Layer specs: all, lists, ranges, slices, negatives; clear errors naming the layer count."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medprobe.errors import InvalidInputError
from medprobe.layerspec import parse_layers


def test_forms() -> None:
    assert parse_layers("all", 4) == [0, 1, 2, 3]
    assert parse_layers("-1", 12) == [11]
    assert parse_layers("0,6,-1", 12) == [0, 6, 11]
    assert parse_layers("0-3", 12) == [0, 1, 2, 3]
    assert parse_layers("4:8", 12) == [4, 5, 6, 7]
    assert parse_layers("::4", 12) == [0, 4, 8]
    assert parse_layers("-3:", 12) == [9, 10, 11]
    assert parse_layers("-3--1", 12) == [9, 10, 11]
    assert parse_layers(" 2 , 0-1 , 2 ", 5) == [0, 1, 2]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("12", ["12", "12 layers"]),
        ("-13", ["-13", "12 layers"]),
        ("0-12", ["12 layers"]),
        ("5-2", ["backwards"]),
        ("0:20", ["12 layers"]),
        ("::0", ["step 0"]),
        ("7:3", ["selects no layer"]),
        ("x", ["cannot read"]),
        ("", ["empty"]),
        ("1,,2", ["empty item"]),
    ],
)
def test_errors(spec: str, words: list[str]) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_layers(spec, 12)
    for word in words:
        assert word in str(info.value)


@given(n=st.integers(1, 200), data=st.data())
def test_list_matches_python_indexing(n: int, data: st.DataObject) -> None:
    picks = data.draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=8))
    assert parse_layers(",".join(map(str, picks)), n) == sorted({list(range(n))[i] for i in picks})


@given(n=st.integers(1, 200), data=st.data())
def test_slices_match_python(n: int, data: st.DataObject) -> None:
    start = data.draw(st.one_of(st.none(), st.integers(-n, n)))
    stop = data.draw(st.one_of(st.none(), st.integers(-n, n)))
    step = data.draw(st.one_of(st.none(), st.integers(-4, 4).filter(lambda s: s != 0)))
    expected = sorted(set(range(n)[slice(start, stop, step)]))
    spec = f"{'' if start is None else start}:{'' if stop is None else stop}" + ("" if step is None else f":{step}")
    if expected:
        assert parse_layers(spec, n) == expected
    else:
        with pytest.raises(InvalidInputError):
            parse_layers(spec, n)


@given(n=st.integers(1, 100), data=st.data())
def test_ranges_and_bounds(n: int, data: st.DataObject) -> None:
    lo = data.draw(st.integers(0, n - 1))
    hi = data.draw(st.integers(lo, n - 1))
    assert parse_layers(f"{lo}-{hi}", n) == list(range(lo, hi + 1))
    bad = data.draw(st.integers(n, n + 50))
    with pytest.raises(InvalidInputError, match=f"{n} layers"):
        parse_layers(str(bad), n)
