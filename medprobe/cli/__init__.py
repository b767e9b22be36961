"""The ``medprobe`` command line (typer)."""
