"""The feature store: Parquet tables, Zarr activation segments, SQL through DuckDB."""

from medprobe.featurestore.store import FeatureStore

__all__ = ["FeatureStore"]
