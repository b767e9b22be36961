"""Medical VQA: items in the store, what a VLM answers to them, metrics and plots.

``medprobe.vqa.ingest``, ``run``, ``compare`` and ``report`` are the workflow functions of ``medprobe vqa ...``.
"""

from medprobe.workflows.vqa import compare, ingest, report, run

__all__ = ["compare", "ingest", "report", "run"]
