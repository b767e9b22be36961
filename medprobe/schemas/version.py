"""The store's on-disk format version.

Bump ``FORMAT_VERSION`` whenever a table schema, the segment layout or the store
layout changes in a way an older reader would misread. A reader refuses a store
whose version is newer than its own.
"""

FORMAT_VERSION = 6

# What each version added, and what opening an older store for writing does about it (``FeatureStore``
# migrates by rewriting the marker: every change so far reads older fragments as they are).
#   2: dataset_images gains ``retired`` (absent -> false) and its latest row per (dataset, image) wins, so a
#      re-ingest can correct a label or retire a member whose file changed; a format-1 reader would show both.
#   3: probe_results gains ``method`` (absent -> 'probe') and ``k``, and ``c`` may be NULL (knn and zeroshot rows);
#      the ``text_embeddings``, ``vqa_items`` and ``vqa_predictions`` tables. A format-2 reader would take
#      knn/zeroshot rows for probes.
#   4: dataset_images gains ``row_kind`` (absent -> 'image'): the members of a ``vqa-<items>`` dataset (written by
#      ``vqa run --save-activations``) say they are VQA items keyed by an item key, not images. Opening a format-3
#      store for writing re-appends the members of datasets of format 'vqa' with row_kind 'vqa_item' (the latest
#      row wins), then rewrites the marker. A format-3 reader would take those rows for images.
#   5: a re-ingest makes a source's members equal to it: dataset_images gains ``source`` (the ingest source the
#      member was last ingested from; absent -> NULL, read as the dataset's only source when it has one),
#      vqa_items gains ``retired`` (absent -> false; latest row wins), and the latest ``images`` row per hash wins
#      (a moved file is re-pointed). Nothing to rewrite; a format-4 reader would read a moved image's old path and
#      show retired items.
#   6: vqa_items may hold open-ended items (``options`` is ``{}`` and ``answer`` the reference text) and items with
#      several images; vqa_predictions gains the open-answer columns (``answer_text``, ``exact_match``, ``token_f1``,
#      ``token_recall``, ``yes_no_correct``) and ``reasoning``, and ``correct`` may be NULL (an open item scored by
#      log-likelihood has no right or wrong). feature_sets gains ``token_grid``: a feature set of pooling ``tokens``
#      (``extract --tokens``) holds every token of a layer's grid per row, laid out as it says. Nothing to rewrite; a
#      format-5 reader would take an open item for a question without options and a token row for a pooled vector.
CHANGES = {
    2: "dataset_images.retired; latest membership row wins; runs.pid",
    3: "probe_results.method and .k (knn, zeroshot rows); text_embeddings, vqa_items, vqa_predictions tables",
    4: "dataset_images.row_kind (image | vqa_item); format-3 VQA item rows migrated",
    5: "dataset_images.source, vqa_items.retired; the latest images row wins (re-ingest retires and re-points)",
    6: "open-ended vqa_items (options {}); vqa_predictions open-answer metrics, reasoning, nullable correct; "
    "feature_sets.token_grid (pooling tokens); the heatmaps table",
}
