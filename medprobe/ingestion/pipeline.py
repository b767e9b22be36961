"""Ingest orchestration: parse a source, hash and inspect its images, assign splits, write the store's rows.

An ingest makes the dataset equal to its source: it writes ``images`` (new hashes, and a new row for a known
image whose stored file is gone when the source now has it elsewhere: a moved folder is re-pointed),
``tasks`` (new tasks only), ``dataset_images`` (new memberships, corrected labels, and a retiring row for each
member the source no longer holds, or holds only unreadable; ``add_only`` keeps those), one ``datasets`` row
when the dataset changed, and ``failures`` rows for what could not be read (each (path, reason) once per
dataset). Re-running the same ingest therefore writes nothing; rows are never rewritten (the latest row per key
wins, every earlier one stays in ``raw_<table>``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from medprobe.errors import InvalidInputError
from medprobe.featurestore import canonical_json, new_id, start_run
from medprobe.imaging import DEFAULT_MAX_PIXELS, Verify, set_pixel_limit
from medprobe.ingestion.formats import parse_source
from medprobe.ingestion.hashing import Probe, add_images, image_row
from medprobe.ingestion.lock import dataset_lock
from medprobe.ingestion.records import FormatOptions, ParsedSource, SourceRecord, TaskSpec, abs_uri, natural_key
from medprobe.ingestion.splits import SplitPlan, assign_splits, rarest_label_strata
from medprobe.schemas import DatasetImageRow, DatasetRow, FailureRow, ImageRow, TaskRow, utcnow

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore

APPEND_CHUNK = 4_096  # rows per Parquet fragment of images / dataset_images: bounds the rows held in memory
UNLABELLED = "<unlabelled>"
_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class IngestOptions:
    """How to ingest (not what the layout is: that is ``FormatOptions``)."""

    copy: bool = False
    verify: Verify | str = Verify.structure
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: int | None = None
    split_plan: SplitPlan = field(default_factory=SplitPlan)
    min_positives: int = 50  # multilabel findings with fewer training positives are dropped
    show_progress: bool = True
    run_params: dict[str, Any] | None = None  # what `runs` records (the caller's options, by their names)


@dataclass
class IngestSummary:
    """What an ingest found and wrote."""

    dataset: str
    format: str
    source: str
    records: int = 0
    images_new: int = 0
    images_reused: int = 0  # already in the store (this or another dataset)
    duplicates: int = 0  # same bytes twice in this source: kept once
    duplicate_label_conflicts: int = 0
    duplicates_by_split: dict[str, int] = field(default_factory=dict)  # by the duplicate's shipped split
    already_in_dataset: int = 0
    labels_changed: int = 0  # members whose labels this source corrects (the new labels win; history kept)
    retired: int = 0  # members whose file now holds other bytes (the old image leaves the dataset)
    removed: int = 0  # members the source no longer holds (or holds only unreadable): retired, history kept
    moved: int = 0  # members last ingested from another source, now from this one
    metadata_changed: int = 0  # members whose metadata this source changes (the new values win)
    repointed: int = 0  # known images whose stored file is gone, now read from where this source has them
    conflicts: int = 0  # rows naming an image already seen in this source with other labels or split
    memberships_new: int = 0
    tasks_new: int = 0
    failures: int = 0
    failures_new: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)  # kept, but worth knowing (e.g. multi-page files)
    groups_across_splits: dict[str, list[str]] = field(default_factory=dict)  # group -> its splits (a leak)
    dropped_findings: dict[str, list[str]] = field(default_factory=dict)
    label_counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # split -> task -> class -> n
    split_counts: dict[str, int] = field(default_factory=dict)
    split_policy: str = ""
    bytes_read: int = 0
    hash_seconds: float = 0.0
    seconds: float = 0.0
    run_id: str | None = None

    @property
    def files_per_s(self) -> float:
        return self.records / self.hash_seconds if self.hash_seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / 1e6 / self.hash_seconds if self.hash_seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["files_per_s"] = round(self.files_per_s, 1)
        out["mb_per_s"] = round(self.mb_per_s, 1)
        return out


@dataclass
class _Stored:
    """What the store already holds that this ingest must respect."""

    image_hashes: set[str]
    splits: dict[str, str]  # image_hash -> split, for this dataset
    pinned: dict[str, str]  # split unit (group id or img:<hash>) -> split
    tasks: dict[str, TaskSpec]
    failures: set[tuple[str | None, str]]
    has_dataset_row: bool = False  # a ``datasets`` row exists (a killed ingest may have left members without it)
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # image_hash -> its dataset_images row
    uris: dict[str, str] = field(default_factory=dict)  # image_hash -> uri, members' images read from outside
    own: set[str] = field(default_factory=set)  # members last ingested from this source


def _column(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist()


def source_key(source: str | Path) -> str:
    """How a source is recorded with its members: an absolute local path, or the URL as given."""
    text = str(source)
    return text.rstrip("/") if "://" in text else abs_uri(text)


def _read_stored(store: FeatureStore, dataset: str, source: str) -> _Stored:
    images = set(_column(store.sql("SELECT image_hash FROM images"), "image_hash"))
    rows = store.sql("SELECT * FROM dataset_images WHERE dataset = ?", [dataset]).to_pylist()
    splits, pinned, members = {}, {}, {}
    # former members keep their split if the source brings them back (a generated split stays stable)
    former = store.sql(
        "SELECT image_hash, split, group_id FROM raw_dataset_images WHERE dataset = ? QUALIFY row_number() OVER "
        "(PARTITION BY image_hash ORDER BY ingested_at DESC, source_path) = 1 AND coalesce(retired, false)",
        [dataset],
    ).to_pylist()
    for row in [*former, *rows]:
        h, g = row["image_hash"], row["group_id"]
        splits[h] = row["split"]
        pinned[g if g is not None else f"img:{h}"] = row["split"]
    members = {row["image_hash"]: row for row in rows}
    # rows of format 4 and older have no source: theirs is the dataset's only source, if it has one
    sources = {source_key(s) for s in _column(store.sql("SELECT source FROM datasets WHERE dataset = ?", [dataset]),
                                              "source")}  # fmt: skip
    legacy = sources == {source}
    own = {h for h, row in members.items() if row.get("source") == source or (row.get("source") is None and legacy)}
    located = store.sql(
        "SELECT i.image_hash, i.uri FROM images i JOIN dataset_images d USING (image_hash) "
        "WHERE d.dataset = ? AND NOT i.in_store",
        [dataset],
    )
    uris = dict(zip(_column(located, "image_hash"), _column(located, "uri"), strict=True))
    tasks = {}
    for row in store.sql("SELECT * FROM tasks WHERE dataset = ?", [dataset]).to_pylist():
        tasks[row["task"]] = TaskSpec(
            name=row["task"],
            type=row["type"],
            label_columns=tuple(row["label_columns"]),
            class_names=tuple(row["class_names"]),
            primary_metric=row["primary_metric"],
        )
    f = store.sql("SELECT path, reason FROM failures WHERE dataset = ? AND stage = 'ingest'", [dataset])
    failures = set(zip(_column(f, "path"), _column(f, "reason"), strict=True))
    has_row = bool(store.sql("SELECT count(*) FROM datasets WHERE dataset = ?", [dataset]).column(0)[0].as_py())
    return _Stored(images, splits, pinned, tasks, failures, has_row, members, uris, own)


def _check_task(parsed: TaskSpec, stored: TaskSpec | None) -> TaskSpec:
    """The stored declaration wins; a conflicting type is an error."""
    if stored is None:
        return parsed
    if stored.type != parsed.type:
        raise InvalidInputError(
            f"task {parsed.name!r} is stored as {stored.type}, this source declares it {parsed.type}; "
            "ingest into another dataset, or pass --task-type to match"
        )
    return stored


def _strata(kept: Sequence[SourceRecord], task: TaskSpec | None) -> list[str]:
    if task is None:
        return [UNLABELLED] * len(kept)
    if task.type == "multilabel":
        return rarest_label_strata([r.labels.get(task.name) or [] for r in kept])
    return [str(r.labels.get(task.name, UNLABELLED)) for r in kept]


def _multilabel_classes(
    task: TaskSpec, kept: Sequence[SourceRecord], splits: Sequence[str], min_positives: int
) -> tuple[tuple[str, ...], list[str]]:
    """Findings kept for a multilabel task: enough positives in the *training* split (test never counted)."""
    if task.class_names is not None:
        return task.class_names, []
    train = Counter(f for r, s in zip(kept, splits, strict=True) if s == "train" for f in r.labels.get(task.name, []))
    everything = {f for r in kept for f in r.labels.get(task.name, [])}
    keep = sorted((f for f in everything if train[f] >= min_positives), key=natural_key)
    dropped = sorted(everything - set(keep), key=natural_key)
    return tuple(keep), dropped


def ingest(
    store: FeatureStore,
    source: str | Path,
    fmt: str,
    dataset: str,
    format_options: FormatOptions | None = None,
    options: IngestOptions | None = None,
) -> IngestSummary:
    """Ingest ``source`` (layout ``fmt``) into ``dataset``; returns what was found and written."""
    format_options = format_options or FormatOptions()
    options = options or IngestOptions()
    if not dataset or not dataset.strip():
        raise InvalidInputError("--dataset needs a non-empty name")
    started = time.perf_counter()
    set_pixel_limit(options.max_pixels)
    parsed = parse_source(fmt, source, format_options)
    if not parsed.records and not parsed.problems:
        raise InvalidInputError(f"{source}: no images found for format {fmt!r}")
    with dataset_lock(store, dataset):  # what is stored is read and extended by this ingest alone
        return _ingest_locked(store, source, fmt, dataset, format_options, options, parsed, started)


def _ingest_locked(
    store: FeatureStore,
    source: str | Path,
    fmt: str,
    dataset: str,
    format_options: FormatOptions,
    options: IngestOptions,
    parsed: ParsedSource,
    started: float,
) -> IngestSummary:
    store.refresh()
    stored = _read_stored(store, dataset, source_key(source))
    summary = IngestSummary(dataset=dataset, format=fmt, source=str(source), records=len(parsed.records))
    summary.excluded = dict(parsed.excluded)
    params = {
        "source": str(source),
        "format": fmt,
        "dataset": dataset,
        "format_options": dataclasses.asdict(format_options),
        "options": {k: v for k, v in dataclasses.asdict(options).items() if k not in ("show_progress", "run_params")},
    }
    with start_run(store, "ingest", options.run_params or params) as run:
        summary.run_id = run.run_id
        probes = _probe_all(store, parsed, options, stored, summary)
        with store.transaction():  # every row of this ingest becomes visible at once, or none (a kill, an error)
            _write(store, dataset, fmt, str(source), parsed, probes, stored, options, params, summary, run.run_id)
        summary.seconds = time.perf_counter() - started
        run.summary = summary.to_json()
    return summary


def _probe_all(
    store: FeatureStore, parsed: ParsedSource, options: IngestOptions, stored: _Stored, summary: IngestSummary
) -> list[Probe]:
    t0 = time.perf_counter()
    probes = add_images(store, parsed.records, known=stored.image_hashes, copy=options.copy, verify=options.verify,
                        max_pixels=options.max_pixels, workers=options.workers,
                        show_progress=options.show_progress)  # fmt: skip
    summary.hash_seconds = time.perf_counter() - t0
    summary.bytes_read = sum(p.n_bytes for p in probes)
    return probes


_Failure = tuple[str | None, str, str, str | None]  # path, reason, error, image hash


@dataclass
class _Member:
    """One source record that becomes (or already is) a dataset member, with its probe and split."""

    record: SourceRecord
    probe: Probe
    split: str = ""

    @property
    def image_hash(self) -> str:
        return self.probe.image_hash or ""


def _first_of_each_image(parsed: ParsedSource, probes: Sequence[Probe], summary: IngestSummary) -> tuple[
    list[_Member], list[_Failure]
]:  # fmt: skip
    """Readable records, the first per image hash (later duplicates are counted), and the unreadable ones."""
    failures: list[_Failure] = [(p.path, p.reason, p.error, None) for p in parsed.problems]
    kept: list[_Member] = []
    first: dict[str, SourceRecord] = {}
    for record, probe in zip(parsed.records, probes, strict=True):
        if not probe.ok:
            failures.append((record.uri or record.source_path, probe.reason or "", probe.error or "", probe.image_hash))
            continue
        h = probe.image_hash or ""
        if h in first:
            summary.duplicates += 1
            where = record.split or "unassigned"
            summary.duplicates_by_split[where] = summary.duplicates_by_split.get(where, 0) + 1
            earlier = first[h]
            differs = [
                f"labels {earlier.labels} vs {record.labels}" if earlier.labels != record.labels else "",
                f"split {earlier.split} vs {record.split}" if earlier.split != record.split else "",
            ]
            if any(differs):
                summary.duplicate_label_conflicts += earlier.labels != record.labels
                summary.conflicts += 1
                why = "; ".join(d for d in differs if d)
                error = f"the same image as {earlier.source_path} with other {why}; the first row is kept"
                failures.append((record.uri or record.source_path, "conflict", error, h))
            continue
        first[h] = record
        kept.append(_Member(record, probe))
        if probe.info is not None and probe.info.frames > 1:
            note = "multi-page/multi-frame images (the first page is used)"
            summary.notes[note] = summary.notes.get(note, 0) + 1
    return kept, failures


def _with_declared_labels(kept: list[_Member], by_name: dict[str, TaskSpec], failures: list[_Failure]) -> list[_Member]:
    """Members whose single-label values are classes of their (stored) task; the others become bad_row failures."""
    out = []
    for m in kept:
        bad = [
            (name, value)
            for name, value in m.record.labels.items()
            if name in by_name
            and by_name[name].type != "multilabel"
            and by_name[name].class_names is not None
            and value not in (by_name[name].class_names or ())
        ]
        if bad:
            name, value = bad[0]
            where = m.record.uri or m.record.source_path
            failures.append((where, "bad_row", f"label {name}={value!r} not in {by_name[name].class_names}",
                             m.probe.image_hash))  # fmt: skip
            continue
        out.append(m)
    return out


def _assign_member_splits(
    kept: list[_Member],
    tasks: list[TaskSpec],
    parsed: ParsedSource,
    stored: _Stored,
    options: IngestOptions,
    summary: IngestSummary,
) -> str:
    """Set every member's split (shipped, generated or already stored); returns the split policy."""
    by_name = {t.name: t for t in tasks}
    stratify = by_name.get(parsed.stratify_task or "") or (tasks[0] if tasks else None)
    units = [m.record.group_id if m.record.group_id is not None else f"img:{m.image_hash}" for m in kept]
    splits, policy = assign_splits(
        [m.record.split for m in kept],
        _strata([m.record for m in kept], stratify),
        units,
        options.split_plan,
        group_name=parsed.group_name,
        stratify=stratify.name if stratify else None,
        pinned=stored.pinned,
    )
    for m, split in zip(kept, splits, strict=True):
        m.split = stored.splits.get(m.image_hash, split)
    summary.split_policy = policy
    spans: dict[str, set[str]] = defaultdict(set)
    for m in kept:
        if m.record.group_id is not None:
            spans[m.record.group_id].add(m.split)
    summary.groups_across_splits = {
        g: sorted(s, key=lambda x: _SPLIT_ORDER.get(x, 9)) for g, s in sorted(spans.items()) if len(s) > 1
    }
    return policy


def _final_tasks(
    tasks: list[TaskSpec], kept: list[_Member], min_positives: int, summary: IngestSummary
) -> list[TaskSpec]:
    """The tasks with multilabel findings that have too few training positives dropped."""
    records, splits = [m.record for m in kept], [m.split for m in kept]
    final: list[TaskSpec] = []
    for task in tasks:
        if task.type == "multilabel":
            classes, dropped = _multilabel_classes(task, records, splits, min_positives)
            if dropped:
                summary.dropped_findings[task.name] = dropped
            task = dataclasses.replace(task, class_names=classes)
        final.append(task)
    return final


def _image_row(m: _Member) -> ImageRow:
    return image_row(m.probe, m.record)


def _append_members(
    store: FeatureStore,
    dataset: str,
    kept: list[_Member],
    tasks: list[TaskSpec],
    stored: _Stored,
    summary: IngestSummary,
    source: str,
) -> dict[str, dict[str, Counter[str]]]:
    """Append new images, then the new memberships that name them, in bounded fragments; returns label counts
    per split and task."""
    label_sets = {t.name: set(t.class_names or ()) for t in tasks if t.type == "multilabel"}

    def labels_of(record: SourceRecord) -> dict[str, Any]:
        return {
            name: [f for f in value if f in label_sets[name]] if name in label_sets else value
            for name, value in record.labels.items()
        }

    image_rows: list[ImageRow] = []
    member_rows: list[DatasetImageRow] = []

    def flush(force: bool = False) -> None:
        # images before the memberships that name them; each fragment at most APPEND_CHUNK rows
        if image_rows and (force or len(image_rows) >= APPEND_CHUNK or len(member_rows) >= APPEND_CHUNK):
            store.append("images", image_rows)
            summary.images_new += len(image_rows)
            image_rows.clear()
        if member_rows and (force or len(member_rows) >= APPEND_CHUNK):
            store.append("dataset_images", member_rows)
            member_rows.clear()

    counts: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    written_images: set[str] = set()
    for m in kept:
        h = m.image_hash
        labels = labels_of(m.record)
        for name, value in labels.items():
            for v in value if isinstance(value, list) else [value]:
                counts[m.split][name][str(v)] += 1
        if h in stored.image_hashes:
            summary.images_reused += 1
            if _moved(stored.uris.get(h), m.probe.uri) and h not in written_images:
                written_images.add(h)  # its stored file is gone: read it from where this source has it
                image_rows.append(_image_row(m))
                summary.repointed += 1
        elif h not in written_images:
            written_images.add(h)
            image_rows.append(_image_row(m))
        row = _member_row(dataset, source, m, canonical_json(labels), stored, summary)  # labels as kept
        if row is not None:
            member_rows.append(row)
            flush()
    member_rows.extend(_retirements(kept, stored, summary))
    flush(force=True)
    return counts


def _member_row(
    dataset: str, source: str, m: _Member, labels: str, stored: _Stored, summary: IngestSummary
) -> DatasetImageRow | None:
    """The membership row this record needs: a new member, a corrected label, a member now from this source (or
    at another path in it); None when the stored row already says all of it."""
    old = stored.members.get(m.image_hash)
    metadata = canonical_json(m.record.metadata) if m.record.metadata else None
    if old is None:
        summary.memberships_new += 1
        return DatasetImageRow(dataset=dataset, image_hash=m.image_hash, split=m.split, group_id=m.record.group_id,
                               source_path=m.record.source_path, labels=labels, source=source,
                               metadata=metadata)  # fmt: skip
    same_labels = labels == old["labels"]
    same_rest = (old.get("source"), old["source_path"], old.get("metadata")) == (source, m.record.source_path,
                                                                               metadata)  # fmt: skip
    if same_labels and same_rest:
        summary.already_in_dataset += 1
        return None
    if same_labels:
        summary.already_in_dataset += 1
        summary.moved += old.get("source") not in (None, source)
        summary.metadata_changed += old.get("metadata") != metadata
    else:
        summary.labels_changed += 1  # a corrected label: the new row wins, the old one stays in raw_
    return DatasetImageRow(**{**old, "labels": labels, "source": source, "source_path": m.record.source_path,
                              "metadata": metadata, "ingested_at": utcnow()})  # fmt: skip


def _moved(stored_uri: str | None, uri: str | None) -> bool:
    """Whether a known image's stored file is gone while this source has the same bytes at ``uri``."""
    if stored_uri is None or uri is None or stored_uri == uri or stored_uri.startswith("store:"):
        return False
    if "://" not in stored_uri:
        return not os.path.exists(stored_uri)
    import fsspec

    fs, path = fsspec.core.url_to_fs(stored_uri)
    return not fs.exists(path)


def _retirements(kept: list[_Member], stored: _Stored, summary: IngestSummary) -> list[DatasetImageRow]:
    """A retiring row for each member of this source that it no longer holds: its file now holds other bytes
    (``retired``), or its row is gone or unreadable (``removed``). Members of other sources are left alone;
    history stays in ``raw_dataset_images``."""
    kept_hashes = {m.image_hash for m in kept}
    kept_paths = {m.record.source_path for m in kept}
    rows = []
    for h in sorted(stored.own - kept_hashes):
        row = stored.members[h]
        if row["source_path"] in kept_paths:
            summary.retired += 1
        else:
            summary.removed += 1
        rows.append(DatasetImageRow(**{**row, "retired": True, "ingested_at": utcnow()}))
    return rows


def _failure_rows(
    failures: list[_Failure], stored: _Stored, dataset: str, run_id: str
) -> tuple[list[FailureRow], Counter[str]]:
    """A failures row for each (path, reason) not stored yet, and the count of every failure by reason."""
    rows, seen = [], set(stored.failures)
    reasons: Counter[str] = Counter()
    for path, reason, error, image_hash in failures:
        reasons[reason] += 1
        if (path, reason) in seen:
            continue
        seen.add((path, reason))
        rows.append(
            FailureRow(
                failure_id=new_id("fail"), stage="ingest", run_id=run_id, dataset=dataset, path=path,
                image_hash=image_hash, reason=reason, error=error,
            )
        )  # fmt: skip
    return rows, reasons


def _write(
    store: FeatureStore,
    dataset: str,
    fmt: str,
    source: str,
    parsed: ParsedSource,
    probes: Sequence[Probe],
    stored: _Stored,
    options: IngestOptions,
    params: dict[str, Any],
    summary: IngestSummary,
    run_id: str,
) -> None:
    """Write what this ingest adds: tasks, images, memberships, the datasets row, failures; fill the summary."""
    kept, failures = _first_of_each_image(parsed, probes, summary)
    tasks = [_check_task(t, stored.tasks.get(t.name)) for t in parsed.tasks]
    kept = _with_declared_labels(kept, {t.name: t for t in tasks}, failures)
    policy = _assign_member_splits(kept, tasks, parsed, stored, options, summary)
    final_tasks = _final_tasks(tasks, kept, options.min_positives, summary)
    task_rows = [
        TaskRow(
            dataset=dataset,
            task=t.name,
            type=t.type,
            label_columns=list(t.label_columns),
            class_names=list(t.class_names or ()),
            primary_metric=t.primary_metric,
        )
        for t in final_tasks
        if t.name not in stored.tasks
    ]
    if task_rows:
        store.append("tasks", task_rows)
    if not kept and stored.own:
        raise InvalidInputError(
            f"{source}: not one image of the source could be read ({len(failures)} failure(s)), so none of the "
            f"{len(stored.own)} members of dataset {dataset!r} from it is retired; check the path (an unmounted "
            "folder?)"
        )
    counts = _append_members(store, dataset, kept, final_tasks, stored, summary, source_key(source))
    failure_rows, reasons = _failure_rows(failures, stored, dataset, run_id)
    changed = (summary.memberships_new or task_rows or summary.labels_changed or summary.retired or summary.removed
               or summary.repointed or summary.moved or summary.metadata_changed)  # fmt: skip
    if changed or (kept and not stored.has_dataset_row):  # a rerun completes an ingest killed before this row
        options_json = json.dumps(params, sort_keys=True, default=str)
        store.append(
            "datasets",
            [DatasetRow(dataset=dataset, format=fmt, source=source, options=options_json, split_policy=policy)],
        )
    if failure_rows:
        store.append("failures", failure_rows)

    summary.tasks_new = len(task_rows)
    summary.failures = len(failures)
    summary.failures_new = len(failure_rows)
    summary.failures_by_reason = dict(sorted(reasons.items()))
    split_counts = Counter(m.split for m in kept)
    summary.split_counts = dict(sorted(split_counts.items(), key=lambda kv: _SPLIT_ORDER.get(kv[0], 9)))
    summary.label_counts = {
        s: {t: dict(sorted(c.items(), key=lambda kv: natural_key(kv[0]))) for t, c in per_task.items()}
        for s, per_task in sorted(counts.items(), key=lambda kv: _SPLIT_ORDER.get(kv[0], 9))
    }
