"""What ``medprobe status`` shows: queued jobs with shard states and rates, and recent extraction runs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from medprobe.engines.jobs import JobQueue
from medprobe.featurestore import effective_status

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore


def job_rows(store: FeatureStore, *, stale_s: float = 120.0) -> list[dict[str, Any]]:
    """One dict per job: shard counts, images committed so far and the live rate of its running shards."""
    queue = JobQueue(store, stale_s=stale_s)
    rows = []
    for job_id in queue.job_ids():
        job = queue.job(job_id)
        shards = queue.shards(job)
        count = {s: sum(1 for x in shards if x.state == s) for s in ("done", "running", "pending", "stale", "released")}
        images = sum((x.done or {}).get("summary", {}).get("images_committed", 0) for x in shards)
        images += sum((x.claim or {}).get("images_committed", 0) for x in shards if x.state != "done")
        rate = sum((x.claim or {}).get("images_per_s", 0.0) for x in shards if x.state == "running")
        failed = queue.failure(job_id)
        if failed is not None:
            state = "failed: " + failed["error"][:80]
        elif count["done"] == job.n_shards:
            state = "done"
        elif count["running"]:
            state = "running"
        else:
            state = "queued"
        rows.append(
            {
                "job": job_id,
                "dataset": job.options.dataset,
                "model": job.options.model,
                "state": state,
                "done": f"{count['done']}/{job.n_shards}",
                "running": count["running"],
                "pending": count["pending"] + count["stale"] + count["released"],
                "images": images,
                "rate": rate,
            }
        )
    return rows


def recent_runs(store: FeatureStore, limit: int = 10) -> list[dict[str, Any]]:
    """The latest extraction runs from the ``runs`` table."""
    t = store.sql(
        "SELECT run_id, status, host, pid, started_at, params, summary FROM runs WHERE kind = 'extract' "
        "ORDER BY started_at DESC LIMIT ?",
        [limit],
    )
    out = []
    for row in t.to_pylist():
        summary = json.loads(row["summary"] or "{}")
        params = json.loads(row["params"] or "{}")
        shard = f"shard {params['shard']}/{params['n_shards']}" if "shard" in params and "n_shards" in params else ""
        out.append(
            {
                "run": row["run_id"],
                "engine": f"{params.get('engine', 'local')} {shard}".strip(),
                "status": effective_status(row),
                "started": row["started_at"].strftime("%Y-%m-%d %H:%M:%S"),
                "images": summary.get("images_committed", ""),
                "rate": summary.get("images_per_s", ""),
                "failures": summary.get("failures", ""),
            }
        )
    return out
