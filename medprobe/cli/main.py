"""Entry point: builds the typer app from the per-area command modules and maps errors to one line."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any

import typer

from medprobe.cli.common import err_console
from medprobe.cli.options import StoreOpt
from medprobe.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, MedprobeError
from medprobe.featurestore import STORE_ENV

# Each area module defines ``register(app: typer.Typer) -> None``; order sets the --help listing.
_AREAS = (
    "medprobe.cli.demo",
    "medprobe.cli.ingest",
    "medprobe.cli.models",
    "medprobe.cli.extract",
    "medprobe.cli.probes",
    "medprobe.cli.predict",
    "medprobe.cli.heatmap",
    "medprobe.cli.search",
    "medprobe.cli.zeroshot",
    "medprobe.cli.vqa",
    "medprobe.cli.store_cmds",
)


def build_app() -> typer.Typer:
    """The ``medprobe`` typer application with every area's commands registered."""
    app = typer.Typer(
        name="medprobe",
        help="Feature store and probe trainer for what vision-language models know about medical images.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(
        ctx: typer.Context,
        debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
        store: StoreOpt = None,
    ) -> None:
        if debug:
            os.environ["MEDPROBE_DEBUG"] = "1"
        if store is not None:  # `medprobe -s STORE sql ...`: the default store of this command, as $MEDPROBE_STORE
            _set_default_store(ctx, store)

    for module in _AREAS:
        importlib.import_module(module).register(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a ``MedprobeError`` prints one line (a traceback only with ``--debug``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("MEDPROBE_DEBUG") == "1"
    app = build_app()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            result = app(args=args, standalone_mode=False)
    except MedprobeError as e:
        if debug:
            raise
        _one_line(str(e))
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(EXIT_INTERRUPTED)
    except typer.TyperException as e:  # usage errors: unknown option, bad value, missing option
        if debug:
            raise
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        _one_line(f"{message}{hint}")
        sys.exit(int(getattr(e, "exit_code", EXIT_USAGE)))
    except Exception as e:  # an unexpected failure: still one line unless --debug
        if debug:
            raise
        _one_line(f"{type(e).__name__}: {e} (run with --debug for the traceback)")
        sys.exit(EXIT_FAILURE)
    sys.exit(result if isinstance(result, int) else 0)


def _set_default_store(ctx: typer.Context, store: str) -> None:
    """Make ``store`` the default store (``$MEDPROBE_STORE``) until the command ends; a command's own ``--store``
    still wins."""
    before = os.environ.get(STORE_ENV)
    os.environ[STORE_ENV] = store

    def restore() -> None:
        if before is None:
            os.environ.pop(STORE_ENV, None)
        else:
            os.environ[STORE_ENV] = before

    ctx.call_on_close(restore)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:  # fmt: skip
    """medprobe's own warnings (StoreWarning, undefined metrics) as one line on stderr; others as Python shows them."""
    from medprobe.workflows.common import StoreWarning

    if issubclass(category, StoreWarning):
        err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
        return
    _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)


_PYTHON_SHOWWARNING = warnings.showwarning


def _one_line(message: str) -> None:
    """The error as one line on stderr (rich markup in the message is shown literally)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
