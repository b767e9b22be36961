"""Scale-out of extraction: ``shards`` (one idempotent shard function; the Ray and SLURM engines), ``jobs`` and
``worker`` (the store-backed job queue), ``status`` (what ``medprobe status`` shows). Correctness comes from the
store: a shard commits its own segments, and running it twice is harmless."""
