"""The feature store: Parquet tables, Zarr activation segments, SQL through DuckDB.

The public API, used by ingest, the extractor, the trainer and the CLI (never the submodules' internals):
``FeatureStore`` and ``default_store_url``; ``start_run`` and ``package_versions`` (the ``runs`` table);
``canonical_json``, ``config_json``, ``stable_hash`` and ``new_id`` (stored keys and ids); ``FileArea`` and
``StoreBlobs`` (small files and copied image bytes in the store); ``store_info``, ``verify_store``, ``gc_store``
and ``export_npz`` (the store commands).
"""

from medprobe.featurestore.export import export_npz
from medprobe.featurestore.files import STORE_URI, FileArea, StoreBlobs
from medprobe.featurestore.ids import canonical_json, config_json, new_id, stable_hash
from medprobe.featurestore.index import NeighbourIndex, build_index, stored_index
from medprobe.featurestore.maintenance import compact_table, gc_store, quarantine, store_info, verify_store
from medprobe.featurestore.runs import effective_status, package_versions, process_gone, start_run
from medprobe.featurestore.store import STORE_ENV, FeatureStore, default_store_url

__all__ = [
    "STORE_ENV",
    "STORE_URI",
    "FeatureStore",
    "FileArea",
    "NeighbourIndex",
    "StoreBlobs",
    "build_index",
    "canonical_json",
    "compact_table",
    "config_json",
    "default_store_url",
    "effective_status",
    "export_npz",
    "gc_store",
    "new_id",
    "package_versions",
    "process_gone",
    "quarantine",
    "stable_hash",
    "start_run",
    "store_info",
    "stored_index",
    "verify_store",
]
