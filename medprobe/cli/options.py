"""Every option shared by several commands, defined once, and the helpers that give them one grammar.

* Short flags have one meaning in every command (``SHORT_FLAGS``; the README's "Conventions" table).
* Lists: comma-separated, and the option may be repeated (``-l 0,4 -l -1`` is ``0,4,-1``).
* Choices are ``click.Choice`` of the library's own vocabulary, so ``--help`` lists them.
* Option groups (:func:`with_group`): a dataclass of options that several commands accept, added to each
  command's signature and handed to it as one object; nothing is forwarded through ``locals()``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar, get_type_hints

import click
import typer

from medprobe.cli.output import FORMATS, OutFormat, emit, resolve_format, wants_progress
from medprobe.errors import InvalidInputError
from medprobe.workflows.common import float_list, int_list, pairs, split_list, split_names

# The short flags: one meaning each, in every command that has the option.
SHORT_FLAGS: dict[str, str] = {
    "-s": "--store",
    "-d": "--dataset",
    "-t": "--task",
    "-m": "--model",
    "-l": "--layers",
    "-f": "--format",
    "-o": "--out",
    "-b": "--batch-size",
}

LAYERS_HELP = (
    "Layers: all | 5 | -1 | 0,4,-1 | 2-10 | 2:10:2; negative indices count from the last {universe} (-1 = the last)."
)


def choice(values: Sequence[str]) -> click.Choice:
    """A click choice over ``values`` (listed by ``--help``)."""
    return click.Choice(list(values), case_sensitive=False)


# ----------------------------------------------------------------------------- options shared by commands
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        "-s",
        help="Store URL: a folder, memory://..., s3://... (default: $MEDPROBE_STORE or ./medprobe-store)",
        show_default=False,
    ),
]


def _output_format(value: str | None) -> str | None:
    """``-f/--format``: one of the output formats; what ``-f`` used to mean in some commands fails naming its new
    spelling (a feature set id -> ``--feature-set``, a source layout -> ``--layout``)."""
    if value is None or value.lower() in FORMATS:
        return None if value is None else value.lower()
    choices = "|".join(FORMATS)
    if value.startswith("fs-"):
        raise typer.BadParameter(f"{value!r}: -f/--format chooses the output ({choices}); name a feature set with "
                                 f"--feature-set {value}")  # fmt: skip
    from medprobe.schemas.vocab import Layout

    if value in {x.value for x in Layout}:
        raise typer.BadParameter(f"{value!r}: -f/--format chooses the output ({choices}); name the source layout "
                                 f"with --layout {value}")  # fmt: skip
    raise typer.BadParameter(f"{value!r} is not one of {choices}")


FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        metavar="[table|csv|json|parquet]",
        callback=_output_format,
        help="Output format (default: table, or from the suffix of --out).",
        show_default=False,
    ),
]
OutOpt = Annotated[str | None, typer.Option("--out", "-o", help="Write the output to this file (or URL).")]
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Dataset name in the store.")]
OptionalDatasetOpt = Annotated[
    str | None, typer.Option("--dataset", "-d", help="Dataset name (of the task, when several datasets have it).")
]
TaskOpt = Annotated[str, typer.Option("--task", "-t", help="Task name (see `medprobe datasets`).")]
ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Model spec: Hugging Face id, hf-hub:org/name, timm/<name>, open_clip:<arch>/<tag>, local directory, "
        "plugin (efficientnet-lite0) or tiny-random/* (see `medprobe models`).",
    ),
]
TrustRemoteCodeOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow a model repository's own Python code to run.")
]
AllowPickleOpt = Annotated[
    bool,
    typer.Option(
        "--allow-pickle",
        help="Allow .bin/.pth (pickle) weights when a checkpoint has no safetensors; a pickle can run code.",
    ),
]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="torch device: cuda, cuda:1, cpu (default: cuda if present).")
]
SplitOpt = Annotated[
    list[str] | None, typer.Option("--split", help="Only these splits: train,val,test (comma list or repeated).")
]
NoProgressOpt = Annotated[bool, typer.Option("--no-progress", help="No progress bar.")]


@dataclasses.dataclass
class Output:
    """The options every result-printing command ends with: ``-f/--format``, ``-o/--out`` and ``-s/--store``."""

    fmt: FormatOpt = None
    out: OutOpt = None
    store: StoreOpt = None

    def check(self) -> None:
        """Fail on a bad --format/--out before any work; --out never writes into the store (its files are the
        store's own: a fragment or marker written there by hand would be read as data)."""
        resolve_format(self.fmt, self.out)
        if self.out is not None:
            refuse_out_in_store(self.out, self.store)

    def emit(self, rows: Any, show: Callable[[], None], document: Any = None) -> None:
        """Print or write the result (see :func:`medprobe.cli.output.emit`)."""
        self.check()
        emit(self.fmt, self.out, rows=rows, document=document, show=show)

    def render(self, result: Any, show: Callable[[], None]) -> None:
        """Print or write a workflow result: its Arrow rows, its document, or ``show`` for a person."""
        self.emit(rows=result.to_arrow(), document=result.to_dict(), show=show)


@dataclasses.dataclass
class ProgressOutput(Output):
    """:class:`Output` and ``--no-progress``, for commands that show a progress bar."""

    no_progress: NoProgressOpt = False

    @property
    def quiet(self) -> bool:
        """No progress bar: asked for, or the output is not a table for a person."""
        return self.no_progress or not wants_progress(self.fmt, self.out)


def refuse_out_in_store(out: str, store: str | None) -> None:
    """InvalidInputError when ``out`` lies inside the store folder (``store``, or the default store)."""
    import os

    from medprobe.featurestore import default_store_url

    root = (store or default_store_url()).removeprefix("file://")
    if "://" in root or "://" in out:
        if out.rstrip("/").startswith(root.rstrip("/") + "/"):
            raise InvalidInputError(f"--out {out} lies inside the store {root}; write results outside it")
        return
    real_root, real_out = os.path.realpath(root), os.path.realpath(out)
    if real_out == real_root or real_out.startswith(real_root.rstrip(os.sep) + os.sep):
        raise InvalidInputError(f"--out {out} lies inside the store {root}; write results outside it (the store's "
                                "files are its data: a file written there would be read as a fragment or marker)")


def layers_option(universe: str, default_help: str) -> Any:
    """The ``--layers/-l`` option (``--layer`` is the same option) with help naming what negatives count from."""
    return typer.Option(
        "--layers",
        "--layer",
        "-l",
        help=LAYERS_HELP.format(universe=universe) + f" (default: {default_help})",
        show_default=False,
    )


# ----------------------------------------------------------------------------- option groups
G = TypeVar("G")
F = TypeVar("F", bound=Callable[..., Any])


def _extend_signature(
    func: F, added: list[inspect.Parameter], wrap: Callable[[dict[str, Any]], dict[str, Any]], drop: str | None = None
) -> F:
    """``func`` with ``added`` keyword-only options appended to its signature (typer reads ``__signature__``);
    at call time ``wrap`` turns the received options into ``func``'s own keyword arguments."""
    sig = inspect.signature(func)
    hints = get_type_hints(func, include_extras=True)
    own = [
        p.replace(annotation=hints.get(p.name, p.annotation), kind=inspect.Parameter.KEYWORD_ONLY)
        for p in sig.parameters.values()
        if p.name != drop
    ]
    clash = {p.name for p in own} & {p.name for p in added}
    if clash:
        raise TypeError(f"{func.__name__}: options {sorted(clash)} are defined twice")
    params = own + added

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        return func(**wrap(kwargs))

    command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command  # type: ignore[return-value]


def with_group(group: type[G], name: str) -> Callable[[F], F]:
    """Give a command every option of the dataclass ``group``; the command receives them as one ``name`` argument.

    The group's fields are ``Annotated[type, typer.Option(...)] = default``, exactly as a command parameter
    would be written; they are appended (keyword-only) to the command's own options.
    """
    fields = dataclasses.fields(group)  # type: ignore[arg-type]
    hints = get_type_hints(group, include_extras=True)
    added = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default,
            annotation=hints[f.name],
        )
        for f in fields
    ]

    def pack(kwargs: dict[str, Any]) -> dict[str, Any]:
        packed = group(**{f.name: kwargs.pop(f.name) for f in fields})
        return {**kwargs, name: packed}

    return lambda func: _extend_signature(func, added, pack, drop=name)


__all__ = [
    "FORMATS",
    "SHORT_FLAGS",
    "AllowPickleOpt",
    "DatasetOpt",
    "DeviceOpt",
    "FormatOpt",
    "ModelOpt",
    "NoProgressOpt",
    "OptionalDatasetOpt",
    "OutFormat",
    "OutOpt",
    "Output",
    "ProgressOutput",
    "SplitOpt",
    "StoreOpt",
    "TaskOpt",
    "TrustRemoteCodeOpt",
    "choice",
    "float_list",
    "int_list",
    "layers_option",
    "pairs",
    "split_list",
    "split_names",
    "with_group",
]
