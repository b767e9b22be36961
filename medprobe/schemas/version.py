"""The store's on-disk format version.

Bump ``FORMAT_VERSION`` whenever a table schema, the segment layout or the store
layout changes in a way an older reader would misread. A reader refuses a store
whose version is newer than its own.
"""

FORMAT_VERSION = 3

# What each version added, and what opening an older store for writing does about it (``FeatureStore``
# migrates by rewriting the marker: every change so far reads older fragments as they are).
#   2: dataset_images gains ``retired`` (absent -> false) and its latest row per (dataset, image) wins, so a
#      re-ingest can correct a label or retire a member whose file changed; a format-1 reader would show both.
#   3: probe_results gains ``method`` (absent -> 'probe') and ``k``, and ``c`` may be NULL (knn and zeroshot rows);
#      the ``text_embeddings``, ``vqa_items`` and ``vqa_predictions`` tables. A format-2 reader would take
#      knn/zeroshot rows for probes.
CHANGES = {
    2: "dataset_images.retired; latest membership row wins; runs.pid",
    3: "probe_results.method and .k (knn, zeroshot rows); text_embeddings, vqa_items, vqa_predictions tables",
}
