"""``vqa run --save-activations``: what the model's layers hold at the moment it answers, as a feature set.

For every item of the set (all splits, so probes have training rows), the prompt the run uses for the item
(exemplars, vignette, question, options in source order, the opened assistant turn) goes through the adapter once,
and every layer's hidden state at the answer position (pooling ``last``: the last prompt token) is committed. Rows are
keyed by an item key (``sha256("vqa-item:<set>:<id>")``; the members say ``row_kind = 'vqa_item'``), and a dataset
``vqa-<set>`` with a task ``answer`` (the gold letter) and the items' splits and groups is registered, so
``medprobe sweep -d vqa-<set> -t answer --feature-set <id>`` fits probes on them: the layer curve of what the model
knows when it answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from medprobe.extractor.feature_set import feature_set_row
from medprobe.extractor.runner import Runner
from medprobe.extractor.writer import Committer, HostBatch
from medprobe.schemas import DatasetImageRow, DatasetRow, TaskRow
from medprobe.schemas.vocab import RowKind
from medprobe.vqa.prompting import PROMPT_VERSION, Item, question_text
from medprobe.vqa.scoring import VlmScorer

if TYPE_CHECKING:
    from PIL import Image

    from medprobe.featurestore import FeatureStore

CHUNK = 32


def item_key(item_set: str, item_id: str) -> str:
    """The 64-hex key an item's activations are stored under."""
    return hashlib.sha256(f"vqa-item:{item_set}:{item_id}".encode()).hexdigest()


def dataset_name(item_set: str) -> str:
    """The dataset holding the items as probe rows."""
    return f"vqa-{item_set}"


def register_dataset(store: FeatureStore, item_set: str, items: Sequence[Item]) -> str:
    """The dataset, its ``answer`` task and one member per item (idempotent); returns the dataset name."""
    name = dataset_name(item_set)
    letters = sorted({it.answer for it in items})
    if not store.sql("SELECT count(*) FROM datasets WHERE dataset = ?", [name]).column(0)[0].as_py():
        store.append("datasets", [DatasetRow(dataset=name, format="vqa", source=f"vqa_items:{item_set}",
                                             split_policy="shipped")])  # fmt: skip
        store.append("tasks", [TaskRow(dataset=name, task="answer", type="binary" if len(letters) == 2 else
                                       "multiclass", label_columns=["answer"], class_names=letters,
                                       primary_metric="macro_auc")])  # fmt: skip
    have = set(store.sql("SELECT image_hash FROM dataset_images WHERE dataset = ?", [name]).column(0).to_pylist())
    rows = [
        DatasetImageRow(dataset=name, image_hash=item_key(item_set, it.item_id), split=it.split,
                        group_id=it.group_id, source_path=it.item_id, labels=json.dumps({"answer": it.answer}),
                        row_kind=RowKind.vqa_item)
        for it in items if item_key(item_set, it.item_id) not in have
    ]  # fmt: skip
    store.append("dataset_images", rows)
    return name


def save_answer_states(
    store: FeatureStore,
    scorer: VlmScorer,
    item_set: str,
    items: Sequence[Item],
    exemplars_of: Callable[[Item], list[Item]],
    load_images: Callable[[Item], list[Image.Image]],
    *,
    prompt_label: str,
    compute_dtype: str,
) -> str:
    """Commit every layer's answer-position state for the items that lack it; returns the feature set id."""
    adapter = scorer.adapter
    ident = adapter.identity
    row = feature_set_row(ident, prompt=f"[vqa {PROMPT_VERSION}; {prompt_label}] " + scorer.prompt("{question}"),
                          pooling="last", compute_dtype=compute_dtype, storage_dtype="float32")  # fmt: skip
    store.register_feature_set(row)
    register_dataset(store, item_set, items)
    layers = list(range(ident.n_layers))
    have = set(store.existing(row.feature_set_id, layers[-1:]).column("image_hash").to_pylist())
    todo = [it for it in items if item_key(item_set, it.item_id) not in have]
    # the extraction's own forward step and writer: host arrays checked per (pooling, layer), segments committed
    # on the writer's thread every CHUNK items (data first, then the manifest that makes them visible)
    runner = Runner(adapter, layers, ["last"], {"last": row.feature_set_id})
    committer = Committer(store, storage_dtype="float32", commit_every=CHUNK, dataset=dataset_name(item_set))
    try:
        for it in todo:  # one item per forward pass: each item's prompt (exemplars, question) is its own
            batch = scorer.inputs(load_images(it), question_text(it, 0, exemplars_of(it)), 1)
            committer.put(HostBatch([item_key(item_set, it.item_id)], runner.forward(batch, 1), []))
    finally:
        committer.close()
    return row.feature_set_id
