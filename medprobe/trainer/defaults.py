"""The trainer's defaults, in a module light enough for the CLI to import at start-up."""

from __future__ import annotations

DEFAULT_C_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)  # a log grid, 8 decades
N_BOOT = 1000  # bootstrap replicates of every confidence interval
