"""VQA metrics from stored predictions: accuracy with CIs clustered by group, position bias, calibration.

* Accuracy: of rotation 0 (the source order), with a percentile bootstrap that resamples *groups* (patients or
  images; an item without a group is its own), so questions about one image do not count as independent evidence.
* With rotations (``--circular``): circular accuracy (an item counts only when every rotation is right) and the
  mean over rotations; the predicted-letter distribution against the gold one (shown letters, every rotation).
* Parse-failure rate (``generate``), chance (mean of 1 / options) and the majority baseline (always answering the
  most frequent gold letter of these items: an upper bound on what letter bias alone earns).
* Probability modes: Brier score and expected calibration error (10 equal-width confidence bins) of the option
  probabilities (``letter``: the letter softmax; ``loglik``: the softmax of the options' log-likelihood sums).
* Open-ended items (``open``), each a mean over items with the same group bootstrap: exact match, token F1 and token
  recall of the reference, and yes/no accuracy over the items whose reference is yes or no (``generate``); the
  reference's mean log-likelihood per token, and the perplexity over all reference tokens (``loglik``).
* ``accuracy`` counts every item with a verdict: multiple-choice items right, open-ended items matched exactly;
  ``closed`` is multiple choice alone. Letter, chance, majority, rotation and calibration figures are multiple choice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from medprobe.errors import InvalidInputError
from medprobe.vqa.prompting import LETTERS

N_BOOT = 1000


def clustered_accuracy(correct: np.ndarray, groups: Sequence[str], *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """``{value, ci_low, ci_high, n}``: mean of ``correct`` with a bootstrap over clusters."""
    correct = np.asarray(correct, dtype=np.float64)
    if not len(correct):
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    labels, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    hits = np.bincount(inverse, weights=correct, minlength=len(labels))
    sizes = np.bincount(inverse, minlength=len(labels)).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(labels), size=(n_boot, len(labels)))
    reps = hits[draws].sum(1) / sizes[draws].sum(1)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return {"value": float(correct.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": len(correct),
            "n_groups": len(labels)}  # fmt: skip


def option_probabilities(row: dict) -> np.ndarray | None:
    """The probability vector over shown options of a probability-mode prediction, else None."""
    if row.get("letter_probs") is not None:
        return np.asarray(row["letter_probs"], dtype=np.float64)
    if row.get("loglik_sum") is not None:
        z = np.asarray(row["loglik_sum"], dtype=np.float64)
        e = np.exp(z - z.max())
        return e / e.sum()
    return None


def calibration(probs: Sequence[np.ndarray], gold: Sequence[int], bins: int = 10) -> dict:
    """Brier score (sum over options, averaged over items) and expected calibration error of the top choice."""
    if not probs:
        return {}
    brier = float(np.mean([((p - np.eye(len(p))[g]) ** 2).sum() for p, g in zip(probs, gold, strict=True)]))
    conf = np.array([p.max() for p in probs])
    right = np.array([int(np.argmax(p) == g) for p, g in zip(probs, gold, strict=True)], dtype=np.float64)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = sum(abs(right[which == b].mean() - conf[which == b].mean()) * (which == b).mean()
              for b in range(bins) if (which == b).any())  # fmt: skip
    return {"brier": brier, "ece": float(ece), "bins": bins}


def check_by(items: Sequence[Any], by: Sequence[str] | None) -> list[str]:
    """The category columns to break down by: ``by``, each one the items carry (refused naming those they do), or
    every column they carry."""
    present = sorted({c for it in items for c, _ in it.categories})
    unknown = [c for c in by or () if c not in present]
    if unknown:
        raise InvalidInputError(f"--by {','.join(unknown)}: the items carry no such category column; they carry: "
                                f"{', '.join(present) or 'none'}")  # fmt: skip
    return list(by) if by else present


def _judged(rows: Sequence[dict], groups: Sequence[str], *, n_boot: int, seed: int) -> dict:
    """Accuracy over the rows with a verdict (``correct`` not NULL)."""
    keep = [i for i, r in enumerate(rows) if r["correct"] is not None]
    return clustered_accuracy(np.array([bool(rows[i]["correct"]) for i in keep]), [groups[i] for i in keep],
                              n_boot=n_boot, seed=seed)  # fmt: skip


def open_metrics(rows: Sequence[dict], groups: Sequence[str], *, n_boot: int, seed: int) -> dict:
    """The open-ended items' metrics (see the module docstring) of their rotation-0 rows."""
    out: dict[str, Any] = {"n_items": len(rows)}
    generated = [i for i, r in enumerate(rows) if r.get("generation") is not None]
    if generated:
        for key in ("exact_match", "token_f1", "token_recall"):
            values = np.array([float(rows[i][key] or 0.0) for i in generated])
            out[key] = clustered_accuracy(values, [groups[i] for i in generated], n_boot=n_boot, seed=seed)
        yes_no = [i for i in generated if rows[i].get("yes_no_correct") is not None]
        out["yes_no_accuracy"] = clustered_accuracy(np.array([bool(rows[i]["yes_no_correct"]) for i in yes_no]),
                                                    [groups[i] for i in yes_no], n_boot=n_boot, seed=seed)  # fmt: skip
        out["parse_failure_rate"] = float(np.mean([rows[i]["parser_step"] == "unparsed" for i in generated]))
    scored = [i for i, r in enumerate(rows) if r.get("generation") is None and r.get("loglik_sum")]
    if scored:
        per_token = np.array([rows[i]["loglik_mean"][0] for i in scored])
        out["loglik_per_token"] = clustered_accuracy(per_token, [groups[i] for i in scored], n_boot=n_boot,
                                                     seed=seed)  # fmt: skip
        total = sum(rows[i]["loglik_sum"][0] for i in scored)
        out["perplexity"] = float(np.exp(-total / sum(rows[i]["n_tokens"][0] for i in scored)))
    return out


def breakdowns(plain: Sequence[dict], items: dict, group: Sequence[str], by: Sequence[str] | None, *,
               n_boot: int, seed: int) -> dict[str, dict[str, dict]]:
    """Accuracy per value of each category column (``by``; default every column the items carry), each with a
    bootstrap CI that resamples patient/image groups; items without a value for a column are left out of it. Where
    the run has open-ended items, each value also has ``closed`` (multiple-choice accuracy) and ``open`` (the
    open-ended metrics)."""
    columns = check_by([items[r["item_id"]] for r in plain], by)
    mixed = any(items[r["item_id"]].is_open for r in plain)
    out: dict[str, dict[str, dict]] = {}
    for column in columns:
        values: dict[str, list[int]] = {}
        for i, r in enumerate(plain):
            value = dict(items[r["item_id"]].categories).get(column)
            if value is not None:
                values.setdefault(value, []).append(i)
        out[column] = {}
        for v, idx in sorted(values.items()):
            rows, groups = [plain[i] for i in idx], [group[i] for i in idx]
            entry = _judged(rows, groups, n_boot=n_boot, seed=seed)
            if mixed:
                closed = [k for k, r in enumerate(rows) if not items[r["item_id"]].is_open]
                opened = [k for k, r in enumerate(rows) if items[r["item_id"]].is_open]
                entry["closed"] = _judged([rows[k] for k in closed], [groups[k] for k in closed], n_boot=n_boot,
                                          seed=seed)  # fmt: skip
                entry["open"] = open_metrics([rows[k] for k in opened], [groups[k] for k in opened],
                                             n_boot=n_boot, seed=seed)  # fmt: skip
            out[column][v] = entry
    return out


def vqa_metrics(rows: Sequence[dict], items: dict, *, n_boot: int = N_BOOT, seed: int = 0,
                by: Sequence[str] | None = None) -> dict:  # fmt: skip
    """Every metric of one run from its ``vqa_predictions`` rows and the items (by id)."""
    plain = [r for r in rows if r["rotation"] == 0]
    group = [items[r["item_id"]].group_id or f"item:{r['item_id']}" for r in plain]
    out: dict = {"n_items": len(plain), "accuracy": _judged(plain, group, n_boot=n_boot, seed=seed)}
    cats: dict[str, list[int]] = {}
    for i, r in enumerate(plain):
        cats.setdefault(items[r["item_id"]].category or "-", []).append(i)
    out["per_category"] = {
        c: _judged([plain[i] for i in idx], [group[i] for i in idx], n_boot=n_boot, seed=seed)
        for c, idx in sorted(cats.items())
    }  # fmt: skip
    out["by"] = breakdowns(plain, items, group, by, n_boot=n_boot, seed=seed)
    opened = [i for i, r in enumerate(plain) if items[r["item_id"]].is_open]
    if opened:
        out["open"] = open_metrics([plain[i] for i in opened], [group[i] for i in opened], n_boot=n_boot,
                                   seed=seed)  # fmt: skip
    everything_plain = plain
    rows = [r for r in rows if not items[r["item_id"]].is_open]  # the rest is multiple choice
    plain = [r for r in plain if not items[r["item_id"]].is_open]
    if opened and plain:
        out["closed"] = {"n_items": len(plain), "accuracy": _judged(
            plain, [items[r["item_id"]].group_id or f"item:{r['item_id']}" for r in plain], n_boot=n_boot,
            seed=seed)}  # fmt: skip
    out["chance"] = float(np.mean([1.0 / items[r["item_id"]].n_options for r in plain])) if plain else None
    gold_shown = [LETTERS[r["option_order"].index(items[r["item_id"]].answer)] for r in rows]
    gold_plain = [LETTERS[r["option_order"].index(items[r["item_id"]].answer)] for r in plain]
    if gold_plain:
        letter, count = Counter(gold_plain).most_common(1)[0]
        out["majority"] = {"letter": letter, "accuracy": count / len(gold_plain)}
    generated = [r for r in everything_plain if r["generation"] is not None]
    out["parse_failure_rate"] = float(np.mean([r["parser_step"] == "unparsed" for r in generated])) if generated \
        else 0.0  # fmt: skip
    shown_pred = [
        LETTERS[r["option_order"].index(r["predicted"])] if r["predicted"] is not None else "unparsed" for r in rows
    ]
    out["letters"] = {"predicted": dict(sorted(Counter(shown_pred).items())),
                      "gold": dict(sorted(Counter(gold_shown).items()))}  # fmt: skip
    rotations = sorted({r["rotation"] for r in rows})
    if len(rotations) > 1:
        by_item: dict[str, list[bool]] = {}
        for r in rows:
            by_item.setdefault(r["item_id"], []).append(bool(r["correct"]))
        ids = sorted(by_item)
        groups = [items[i].group_id or f"item:{i}" for i in ids]
        out["circular_accuracy"] = clustered_accuracy(np.array([all(by_item[i]) for i in ids]), groups,
                                                      n_boot=n_boot, seed=seed)  # fmt: skip
        out["mean_over_rotations"] = clustered_accuracy(np.array([np.mean(by_item[i]) for i in ids]), groups,
                                                        n_boot=n_boot, seed=seed)  # fmt: skip
    probs = [option_probabilities(r) for r in plain]
    if plain and all(p is not None for p in probs):
        gold_idx = [r["option_order"].index(items[r["item_id"]].answer) for r in plain]
        out["calibration"] = calibration([p for p in probs if p is not None], gold_idx)
    return out
