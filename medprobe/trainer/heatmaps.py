"""Where a probe's evidence lies: the probe applied to every token of a layer's grid.

A stored probe is affine in its features: ``logit = coef @ ((x - mean) / scale) + intercept``. For a probe trained on
the mean of the grid's tokens (``image_mean`` for ViTs and VLM image tokens, ``spatial_mean`` for CNNs), the logit of
the pooled vector is therefore exactly the mean over tokens of the probe applied to each token: the per-token logits
are an additive decomposition of the prediction (:func:`token_logits`, exact to float rounding). For a probe trained
on another pooling (``cls``, ``last``, ``mean`` over all tokens) the same per-token readout is only an approximation,
and every map says so (``exact`` False).

Border evidence (:func:`border_shares`): per class, the token logits minus their mean over the grid (evidence above
the image's average), kept where positive; the share of that positive evidence lying in the grid's border (``width``
tokens from each edge) against the centre. A probe that reads rulers, markers or scanner borders puts its evidence
there; evidence spread evenly puts the border's share of the area (:func:`border_mask`) there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.errors import InvalidInputError
from medprobe.trainer.defaults import N_BOOT

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore
    from medprobe.schemas import FeatureSetRow
    from medprobe.trainer.stored import StoredProbe

TOKENS = "tokens"
APPROXIMATE_POOLINGS = ("cls", "last", "mean")  # a per-token readout that only approximates the prediction


@dataclass(frozen=True)
class Grid:
    """One layer's token layout in a tokens feature set (``feature_sets.token_grid``)."""

    n_prefix: int
    rows: int
    cols: int
    hidden: int
    pooled: str  # the pooling that is the mean of the grid's tokens

    def split(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A stored token row as ``(prefix (n_prefix, hidden), grid (rows * cols, hidden))``."""
        tokens = np.asarray(row, dtype=np.float64).reshape(self.n_prefix + self.rows * self.cols, self.hidden)
        return tokens[: self.n_prefix], tokens[self.n_prefix :]


def token_grid(fs: FeatureSetRow, layer: int) -> Grid:
    """The grid of ``layer`` in the tokens feature set ``fs``; refused when it has none."""
    grids = json.loads(fs.token_grid or "{}")
    if str(layer) not in grids:
        raise InvalidInputError(f"feature set {fs.feature_set_id} has no token grid at layer {layer} (its grids: "
                                f"layers {', '.join(sorted(grids, key=int)) or 'none'})")  # fmt: skip
    g = grids[str(layer)]
    return Grid(int(g["n_prefix"]), int(g["rows"]), int(g["cols"]), int(g["hidden"]), str(g["pooled"]))


def find_token_feature_set(store: FeatureStore, pooled: FeatureSetRow, layer: int, model_hint: str) -> FeatureSetRow:
    """The tokens feature set of the same model, revision, preprocessing, prompt and compute dtype as ``pooled``
    with a grid at ``layer``; refused naming the ``extract --tokens`` command to run when there is none."""
    from medprobe.schemas import FeatureSetRow as Row

    rows = store.sql(
        "SELECT * FROM feature_sets WHERE pooling = 'tokens' AND model_id = ? AND model_revision = ? AND adapter = ? "
        "AND preprocessing = ? AND prompt IS NOT DISTINCT FROM ? AND compute_dtype = ? ORDER BY created_at DESC",
        [pooled.model_id, pooled.model_revision, pooled.adapter, pooled.preprocessing, pooled.prompt,
         pooled.compute_dtype],
    ).to_pylist()  # fmt: skip
    with_layer = [Row(**r) for r in rows if str(layer) in json.loads(r["token_grid"] or "{}")]
    if not with_layer:
        raise InvalidInputError(
            f"feature set {pooled.feature_set_id} has no tokens stored at layer {layer}: run `medprobe extract "
            f"{model_hint} -m {pooled.model_id} --layers {layer} --pooling {pooled.pooling} --tokens` (with the "
            f"probe's prompt and --dtype {pooled.compute_dtype}) first"
        )
    return with_layer[0]


def exactness(probe_pooling: str, grid: Grid) -> bool:
    """True when the probe's pooling is the grid's mean (the map is exact), False for an approximate readout;
    refused for a pooling the tokens cannot read."""
    if probe_pooling == grid.pooled:
        return True
    if probe_pooling in APPROXIMATE_POOLINGS:
        return False
    raise InvalidInputError(f"the probe was trained on pooling {probe_pooling!r}; the stored tokens are the grid "
                            f"whose mean is {grid.pooled!r}: no per-token reading of that pooling exists")  # fmt: skip


def pooled_from_tokens(pooling: str, row: np.ndarray, grid: Grid) -> np.ndarray | None:
    """The pooled vector a probe of ``pooling`` reads, recomputed from a token row (None for ``last``, which is not
    among the stored tokens)."""
    prefix, tokens = grid.split(row)
    if pooling == grid.pooled:
        return tokens.mean(axis=0)
    if pooling == "cls" and grid.n_prefix:
        return prefix[0]
    if pooling == "mean":
        return np.concatenate([prefix, tokens]).mean(axis=0)
    return None


def token_logits(probe: StoredProbe, tokens: np.ndarray) -> np.ndarray:
    """``(tokens, classes)``: every grid token's logit for each class (binary: the negative class is minus the
    positive one's logit, so both classes have a map)."""
    logits = probe.probe.decision_function(tokens)
    if probe.kind == "binary":
        return np.concatenate([-logits, logits], axis=1)
    return logits


def border_mask(rows: int, cols: int, width: int) -> np.ndarray:
    """Bool ``(rows, cols)``: the tokens within ``width`` of an edge."""
    r, c = np.indices((rows, cols))
    return (r < width) | (r >= rows - width) | (c < width) | (c >= cols - width)


def border_width(rows: int, cols: int, fraction: float) -> int:
    """The border in tokens for ``fraction`` of the shorter side (at least one token, at most less than half)."""
    if not 0 < fraction < 0.5:
        raise InvalidInputError(f"--border {fraction}: give the border as a fraction of the image side in (0, 0.5)")
    return int(min(max(1, round(fraction * min(rows, cols))), max(1, (min(rows, cols) - 1) // 2)))


def border_shares(maps: np.ndarray, width: int) -> np.ndarray:
    """Per class, the share of positive evidence (token logit above the grid's mean) lying in the border;
    ``maps`` is ``(rows, cols, classes)``. NaN for a class whose map is flat."""
    rows, cols, _ = maps.shape
    mask = border_mask(rows, cols, width)
    centred = maps - maps.mean(axis=(0, 1), keepdims=True)
    positive = np.clip(centred, 0, None)
    total = positive.sum(axis=(0, 1))
    inside = positive[mask].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def share_ci(values: Sequence[float], *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Mean border share over images with a percentile bootstrap CI that resamples images."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if not len(x):
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    draws = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    lo, hi = np.percentile(x[draws].mean(axis=1), [2.5, 97.5])
    return {"value": float(x.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": len(x)}


def border_signal(rows: Sequence[dict[str, Any]], classes: Sequence[str], *, n_boot: int = N_BOOT,
                  seed: int = 0) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per class, the border share of that class's evidence over the images of that class (their label; their
    predicted class where they have none), with a bootstrap CI over images, beside the border's share of the
    area (what evenly spread evidence would give)."""
    out: dict[str, dict[str, Any]] = {}
    for name in classes:
        mine = [r for r in rows if (r.get("label") if r.get("label") is not None else r["predicted"]) == name]
        shares = [json.loads(r["border_shares"]).get(name) for r in mine]
        entry = share_ci([s for s in shares if s is not None], n_boot=n_boot, seed=seed)
        entry["border_area"] = float(np.mean([r["border_area"] for r in mine])) if mine else None
        out[name] = entry
    return out


def evidence_tables(store: FeatureStore, probe_ids: Sequence[str]) -> list[str]:
    """The report's "where the evidence lies" section: per probe with heat maps, per class the border share of its
    evidence with a CI over images (empty when no probe has heat maps)."""
    if not probe_ids:
        return []
    rows = store.sql("SELECT * FROM heatmaps WHERE list_contains(?, probe_id) ORDER BY created_at",
                     [list(probe_ids)]).to_pylist()  # fmt: skip
    if not rows:
        return []
    lines = ["", "## Where the evidence lies (border against centre)", "",
             "Share of each class's positive evidence (token logit above the image's mean) in the image border, over "
             "the images of that class, with 95% bootstrap CIs over images; evenly spread evidence gives the border's "
             "share of the area. `medprobe heatmap` wrote the maps.", "",
             "| probe | class | images | border share [95% CI] | border area | border width | exact |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for probe_id in dict.fromkeys(r["probe_id"] for r in rows):
        mine = [r for r in rows if r["probe_id"] == probe_id]
        latest = [r for r in mine if r["run_id"] == mine[-1]["run_id"]]  # the latest heatmap run of the probe
        classes = list(dict.fromkeys(k for r in latest for k in json.loads(r["border_shares"])))
        for name, e in border_signal(latest, classes).items():
            if not e["n"]:
                continue
            lines.append(f"| {probe_id} | {name} | {e['n']} | {e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}] "
                         f"| {e['border_area']:.3f} | {latest[0]['border_tokens']} token(s) | "
                         f"{'yes' if latest[0]['exact'] else 'approximate'} |")  # fmt: skip
    return lines
