"""``heatmap``: where in an image a stored probe's evidence lies, from the stored token grids of its feature set.

For each image the probe is applied to every token of the grid (:mod:`medprobe.trainer.heatmaps`): exact for a
probe on the grid's mean pooling, labelled approximate otherwise. An image whose tokens are not stored (or one
given by path) is run through the model. Overlays and per-class galleries go to ``out``; one summary row per image
goes to the ``heatmaps`` table.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.errors import InvalidInputError, NotFoundError
from medprobe.featurestore import start_run
from medprobe.trainer.defaults import N_BOOT
from medprobe.workflows.common import ListArg, StoreArg, check_out_folder, open_store, split_list
from medprobe.workflows.results import Result

if TYPE_CHECKING:
    from PIL import Image

    from medprobe.adapters.adapter import Adapter
    from medprobe.featurestore import FeatureStore
    from medprobe.schemas import FeatureSetRow
    from medprobe.trainer.heatmaps import Grid
    from medprobe.trainer.stored import StoredProbe

CHUNK = 64  # images whose token rows are read at once


@dataclass
class HeatmapResult(Result):
    """What ``heatmap`` drew: per image its predicted class, probability and border share (``rows()``), per class the
    border share of its evidence with a CI over images (``border``), and the PNGs written (``paths``)."""

    run_id: str
    probe_id: str
    out: str
    n_images: int
    exact: bool
    token_feature_set_id: str
    layer: int
    grid: list[int]
    border_tokens: int
    border: dict[str, dict[str, Any]]
    paths: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable images of a dataset: source -> why
    images: list[dict[str, Any]] = field(repr=False, default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One row per image (the ``heatmaps`` table's)."""
        return self.images


@dataclass
class _Image:
    """An image to map: where it is, its hash (None for a path outside the store) and its label."""

    source: str
    image_hash: str | None
    label: str | None


def heatmap(
    *, probe: str, hashes: ListArg = None, image: str | None = None, dataset: str | None = None, split: ListArg = None,
    limit: int | None = None, out: str = "heatmaps", border: float = 0.15, gallery: int = 8, overlays: bool = True,
    n_boot: int = N_BOOT, device: str | None = None, store: StoreArg = None,
) -> HeatmapResult:  # fmt: skip
    """Per-token maps of the stored probe ``probe`` over images, as PNG overlays, galleries and ``heatmaps`` rows.

    Args:
        probe: a probe id of ``probe_results`` (a fitted probe).
        hashes: these images (by hash); image: one image file; dataset: the images of this dataset (``split``,
            the first ``limit`` by hash). Exactly one of the three.
        out: the folder for the PNGs (one overlay per image; ``mean_maps.png``, where each class's evidence lies on
            average over its images; per class galleries of the most confident true and false positives where the
            images have labels).
        border: the border's width as a fraction of the shorter side of the grid (at least one token).
        gallery: images per gallery (only these many views per class are kept in memory, whatever the dataset's
            size); overlays: one overlay PNG per image (off: galleries, mean maps and the rows only).
        n_boot: bootstrap replicates of the border share's CI.
        device: where the model runs for images whose tokens are not stored.
        store: a store URL or an open ``FeatureStore``.
    """
    from medprobe.trainer import heatmaps as hm
    from medprobe.trainer.stored import load_probe

    chosen = [x for x in (hashes, image, dataset) if x]
    if len(chosen) != 1:
        raise InvalidInputError("give exactly one of --hash H, --image PATH or --dataset D")
    check_out_folder(out)
    st = open_store(store)
    sp = load_probe(st, probe)
    pooled = st.feature_set(sp.feature_set_id)
    if st.sql("SELECT count(*) FROM dataset_images WHERE dataset = ? AND row_kind <> 'image'",
              [sp.dataset]).column(0)[0].as_py():  # fmt: skip
        raise InvalidInputError(f"probe {probe} was trained on VQA items' answer states (dataset {sp.dataset}): "
                                "they have no image tokens to map")  # fmt: skip
    tokens_fs = hm.find_token_feature_set(st, pooled, sp.layer, f"-d {dataset or sp.dataset}")
    grid = hm.token_grid(tokens_fs, sp.layer)
    exact = hm.exactness(pooled.pooling, grid)
    width = hm.border_width(grid.rows, grid.cols, border)
    images = _select(st, sp, split_list(hashes), image, dataset, split_list(split), limit)
    params = {"probe": probe, "hashes": split_list(hashes), "image": image, "dataset": dataset,
              "split": split_list(split), "limit": limit, "out": out, "border": border, "gallery": gallery,
              "overlays": overlays,
              "token_feature_set_id": tokens_fs.feature_set_id, "layer": sp.layer, "exact": exact}  # fmt: skip
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    with start_run(st, "heatmap", params) as run:
        mapper = _Mapper(st, sp, pooled, tokens_fs, grid, exact, width, folder, device, gallery, overlays)
        rows, skipped = mapper.run(run.run_id, images)
        if not rows:
            raise InvalidInputError(f"no image could be mapped ({len(skipped)} unreadable: "
                                    f"{next(iter(skipped.items()), ('', ''))[1]})")  # fmt: skip
        paths = [r["png"] for r in rows if r["png"]]
        paths += [mapper.mean_maps(), *mapper.galleries()]
        signal = hm.border_signal(rows, sp.class_names, n_boot=n_boot)
        st.append("heatmaps", [_row(r) for r in rows])
        run.summary = {"n_images": len(rows), "skipped": len(skipped), "border": signal}
    return HeatmapResult(
        run_id=run.run_id, probe_id=probe, out=out, n_images=len(rows), exact=exact,
        token_feature_set_id=tokens_fs.feature_set_id, layer=sp.layer, grid=[grid.rows, grid.cols],
        border_tokens=width, border=signal, paths=paths, skipped=skipped, images=rows,
    )  # fmt: skip


def _row(r: dict[str, Any]) -> Any:
    from medprobe.schemas.tables import HeatmapRow

    return HeatmapRow(**r)


def _select(st: FeatureStore, sp: StoredProbe, hashes: list[str], image: str | None, dataset: str | None,
            splits: list[str], limit: int | None) -> list[_Image]:  # fmt: skip
    """The images asked for, with their label for the probe's task where their dataset has one."""
    if image:
        return [_Image(str(Path(image).expanduser()), None, None)]
    name = dataset or sp.dataset
    query = ("SELECT d.image_hash, d.labels, i.uri FROM dataset_images d JOIN images i USING (image_hash) "
             "WHERE d.dataset = ? AND d.row_kind = 'image'")  # fmt: skip
    args: list[Any] = [name]
    if hashes:
        query += " AND list_contains(?, d.image_hash)"
        args.append(hashes)
    if splits:
        query += " AND list_contains(?, d.split)"
        args.append(splits)
    members = st.sql(query + " ORDER BY d.image_hash", args).to_pylist()[:limit]
    if hashes:
        missing = sorted(set(hashes) - {m["image_hash"] for m in members})
        if missing:
            raise NotFoundError(f"image(s) {', '.join(h[:12] for h in missing)} are not in dataset {name!r} (the "
                                "probe's); give --dataset for another")  # fmt: skip
    if not members:
        raise NotFoundError(f"dataset {name!r} has no images{' in ' + ', '.join(splits) if splits else ''}")
    out = []
    for m in members:
        value = json.loads(m["labels"] or "{}").get(sp.task)
        label = None
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            label = _class_name(value, sp.class_names)
        out.append(_Image(m["uri"], m["image_hash"], label))
    return out


def _class_name(value: Any, classes: list[str]) -> str | None:
    """A stored label as one of the probe's class names (labels are stored as names or as class indices)."""
    if str(value) in classes:
        return str(value)
    if isinstance(value, (int, float)) and float(value).is_integer() and 0 <= int(value) < len(classes):
        return classes[int(value)]
    return None


class _Mapper:
    """Computes, draws and summarises the maps of one probe."""

    def __init__(self, st: FeatureStore, sp: StoredProbe, pooled: FeatureSetRow, tokens_fs: FeatureSetRow,
                 grid: Grid, exact: bool, width: int, folder: Path, device: str | None, gallery: int,
                 overlays: bool) -> None:  # fmt: skip
        self.st, self.sp, self.pooled, self.tokens_fs, self.grid = st, sp, pooled, tokens_fs, grid
        self.exact, self.width, self.folder, self.device = exact, width, folder, device
        self.gallery, self.overlays = gallery, overlays
        self.adapter: Adapter | None = None
        # per (class, true_positives | false_positives): the most confident views so far (a min-heap of `gallery`
        # entries, so memory does not grow with the dataset) and how many images were of that kind
        self.best: dict[tuple[str, str], list[tuple[float, int, Any]]] = {}
        self.n_kind: dict[tuple[str, str], int] = {}
        # per class: the sum of its centred maps over the images of that class (label, else prediction), and count
        self.sums: dict[str, tuple[np.ndarray, int]] = {}

    def run(self, run_id: str, images: list[_Image]) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Every image's summary row (its PNG written) and the unreadable ones."""
        stored = set(self.st.existing(self.tokens_fs.feature_set_id, [self.sp.layer]).column("image_hash").to_pylist())
        have_pooled = set(self.st.existing(self.pooled.feature_set_id, [self.sp.layer]).column("image_hash")
                          .to_pylist())  # fmt: skip
        rows: list[dict[str, Any]] = []
        skipped: dict[str, str] = {}
        for start in range(0, len(images), CHUNK):
            chunk = images[start : start + CHUNK]
            known = [im.image_hash for im in chunk if im.image_hash is not None and im.image_hash in stored]
            token_rows = dict(zip(known, self.st.read(self.tokens_fs.feature_set_id, self.sp.layer, known),
                                  strict=True)) if known else {}  # fmt: skip
            with_pooled = [h for h in known if h in have_pooled]
            pooled_rows = dict(zip(with_pooled, self.st.read(self.pooled.feature_set_id, self.sp.layer, with_pooled),
                                   strict=True)) if with_pooled else {}  # fmt: skip
            for im in chunk:
                try:
                    picture = self._picture(im)
                except InvalidInputError as e:
                    if im.image_hash is None:
                        raise
                    skipped[im.source] = str(e)
                    continue
                if im.image_hash in token_rows:
                    row = np.asarray(token_rows[im.image_hash], dtype=np.float64)
                    pooled_vec = pooled_rows.get(im.image_hash)
                else:
                    row, pooled_vec = self._forward(picture)
                rows.append(self._summarise(run_id, im, picture, row, pooled_vec))
        return rows, skipped

    def _picture(self, im: _Image) -> Image.Image:
        from medprobe.featurestore import STORE_URI
        from medprobe.imaging import ImageReadError, decode_image, read_file_bytes

        try:
            data = self.st.read_bytes(im.source) if im.source.startswith(STORE_URI) else read_file_bytes(im.source)
            return decode_image(data, source=im.source)
        except (ImageReadError, OSError, ValueError) as e:
            raise InvalidInputError(f"{im.source}: cannot read the image ({e}); fix or replace the file") from None

    def _load_model(self) -> Adapter:
        from medprobe.extractor.pipeline import ExtractOptions, load_model

        if self.adapter is None:
            options = ExtractOptions.model_validate({"dataset": "-", "model": self.tokens_fs.model_id,
                                                     "dtype": self.tokens_fs.compute_dtype, "device": self.device})
            adapter = load_model(options)
            ident = adapter.identity
            if (ident.model_revision, ident.preprocessing) != (self.tokens_fs.model_revision,
                                                               self.tokens_fs.preprocessing):  # fmt: skip
                raise InvalidInputError(f"{self.tokens_fs.model_id} is no longer the model of feature set "
                                        f"{self.tokens_fs.feature_set_id} (its weights or preprocessing changed); "
                                        "map images whose tokens are stored")  # fmt: skip
            self.adapter = adapter
        return self.adapter

    def _forward(self, picture: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
        """An image's token row (and, for a ``last`` probe, its pooled vector) through the model."""
        import torch

        adapter = self._load_model()
        prompt = self.tokens_fs.prompt
        if prompt is None:
            batch = adapter.preprocess([picture], None)
        else:  # the stored prompt is the processor's exact text (chat template applied)
            from medprobe.adapters.models.vision_tower import to_rgb

            pre: Any = adapter.preprocessor
            raw = pre.run_processor(to_rgb([picture]), prompt)
            batch = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor) and k not in pre.drop_keys}
        poolings = ["tokens", *(["last"] if self.pooled.pooling == "last" else [])]
        out = adapter.forward_pooled(batch, [self.sp.layer], poolings)
        row = out[("tokens", self.sp.layer)][0].double().cpu().numpy()
        if row.shape[0] != self.grid.n_prefix * self.grid.hidden + self.grid.rows * self.grid.cols * self.grid.hidden:
            raise InvalidInputError("the image gives a token grid other than the stored one (this model sizes its grid "
                                    "by the image); map images of the stored size")  # fmt: skip
        last = out.get(("last", self.sp.layer))
        return row, None if last is None else last[0].double().cpu().numpy()

    def _summarise(self, run_id: str, im: _Image, picture: Image.Image, row: np.ndarray,
                   pooled_vec: np.ndarray | None) -> dict[str, Any]:  # fmt: skip
        from medprobe.trainer import heatmaps as hm
        from medprobe.trainer.heatmap_plots import MapView, model_view, overlay_png

        _, tokens = self.grid.split(row)
        maps = hm.token_logits(self.sp, tokens).reshape(self.grid.rows, self.grid.cols, -1)
        if pooled_vec is None:
            pooled_vec = hm.pooled_from_tokens(self.pooled.pooling, row, self.grid)
        if pooled_vec is None:  # a `last` probe on a stored image without its pooled row
            _, pooled_vec = self._forward(picture)
        pooled_logits = hm.token_logits(self.sp, np.asarray(pooled_vec, dtype=np.float64)[None])[0]
        proba = self.sp.predict_proba(np.asarray(pooled_vec, dtype=np.float64)[None])[0]
        k = int(np.argmax(proba))
        name = self.sp.class_names[k]
        shares = hm.border_shares(maps, self.width)
        class_map = maps[..., k]
        own = im.label if im.label is not None else name
        j = self.sp.class_names.index(own)
        total, count = self.sums.get(own, (np.zeros((self.grid.rows, self.grid.cols)), 0))
        self.sums[own] = (total + maps[..., j] - maps[..., j].mean(), count + 1)
        peak = np.unravel_index(int(np.argmax(class_map)), class_map.shape)
        view = MapView(model_view(picture, self.tokens_fs.preprocessing), class_map,
                       f"{name} p={proba[k]:.2f}" + (f" (label {im.label})" if im.label is not None else ""))
        key = im.image_hash or hashlib.sha256(im.source.encode()).hexdigest()
        if im.label is not None:
            self._keep(name, "true_positives" if im.label == name else "false_positives", float(proba[k]), view)
        png = None
        if self.overlays:
            how = "exact: mean = the probe's logit" if self.exact else f"approximate ({self.pooled.pooling} probe)"
            view_title = MapView(view.image, class_map, f"{Path(im.source).name}: {view.caption}\n{how}")
            png = overlay_png(view_title, self.folder / f"{key[:16]}_{_safe(name)}.png",
                              label=f"token logit for {name} (centre: the map's mean {class_map.mean():.3f})")
        border = hm.border_mask(self.grid.rows, self.grid.cols, self.width)
        return {
            "run_id": run_id, "probe_id": self.sp.probe_id, "image_hash": im.image_hash, "source": im.source,
            "label": im.label, "predicted": name, "probability": float(proba[k]), "exact": self.exact,
            "pooling": self.pooled.pooling, "layer": self.sp.layer,
            "token_feature_set_id": self.tokens_fs.feature_set_id, "grid_rows": self.grid.rows,
            "grid_cols": self.grid.cols, "pooled_logit": float(pooled_logits[k]),
            "map_mean": float(class_map.mean()), "border_tokens": self.width, "border_area": float(border.mean()),
            "border_shares": json.dumps({c: (None if not np.isfinite(s) else float(s))
                                         for c, s in zip(self.sp.class_names, shares, strict=True)}),
            "peak_row": int(peak[0]), "peak_col": int(peak[1]), "png": None if png is None else str(png),
        }  # fmt: skip

    def mean_maps(self) -> str:
        """``mean_maps.png``: per class, where its evidence lies on average over its images (grid only)."""
        from medprobe.trainer.heatmap_plots import mean_maps_png

        maps = {c: (self.sums[c][0] / self.sums[c][1], self.sums[c][1]) for c in self.sp.class_names if c in self.sums}
        how = "exact" if self.exact else "approximate"
        title = (f"{self.sp.task}: mean {how} token map per class ({self.grid.rows} x {self.grid.cols} grid, layer "
                 f"{self.sp.layer})")  # fmt: skip
        return str(mean_maps_png(maps, title, self.folder / "mean_maps.png"))

    def _keep(self, name: str, kind: str, probability: float, view: Any) -> None:
        """Offer a labelled image's view to its class's gallery of ``kind``."""
        key = (name, kind)
        self.n_kind[key] = self.n_kind.get(key, 0) + 1
        heap = self.best.setdefault(key, [])
        entry = (probability, self.n_kind[key], view)
        if len(heap) < self.gallery:
            heapq.heappush(heap, entry)
        elif probability > heap[0][0]:
            heapq.heapreplace(heap, entry)

    def galleries(self) -> list[str]:
        """Per class, the most confident true positives and false positives among the labelled images."""
        from medprobe.trainer.heatmap_plots import gallery_png

        paths = []
        for name in self.sp.class_names:
            for kind in ("true_positives", "false_positives"):
                kept = sorted(self.best.get((name, kind), []), key=lambda e: (-e[0], e[1]))
                if kept:
                    title = f"{name}: most confident {kind.replace('_', ' ')} ({self.n_kind[(name, kind)]} in all)"
                    paths.append(str(gallery_png([e[2] for e in kept], title,
                                                 self.folder / f"gallery_{_safe(name)}_{kind}.png")))  # fmt: skip
        return paths


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
