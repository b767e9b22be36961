"""The README's conventions hold for every command: short flags, output options, choices, retired spellings."""

from __future__ import annotations

import enum
import typing
from typing import Any

import pytest
import typer

from medprobe.cli.main import build_app
from medprobe.cli.options import SHORT_FLAGS
from medprobe.cli.output import FORMATS
from tests.helpers.cli import run_cli

# Commands that print results: each takes -f/--format table|csv|json|parquet and -o/--out FILE.
PRINTS_RESULTS = {
    "ingest",
    "predict",
    "datasets",
    "models",
    "search",
    "zeroshot",
    "store compact",
    "vqa ingest",
    "vqa run",
    "vqa compare",
    "extract",
    "submit",
    "worker",
    "status",
    "train",
    "sweep",
    "compare",
    "sql",
    "store info",
    "store verify",
    "store gc",
    "store quarantine",
}
# Commands that write files instead of printing results: -o/--out names what they write.
WRITES_FILES = {"export", "report", "demo", "vqa report", "heatmap"}
# Options whose value is one of a closed set: --help must list it.
CHOICES = {
    "--calibrate",
    "--test",
    "--solver",
    "--selection",
    "--grid",
    "--method",
    "--mode",
    "--engine",
    "--decode",
    "--select-by",
    "--class-weight",
    "--test-split",
    "--dtype",
    "--storage-dtype",
    "--verify",
    "--quantization",
    "--layout",
    "--neoplastic-share",
    "--format",
}


def _commands() -> dict[str, Any]:
    root = typer.main.get_command(build_app())
    out: dict[str, Any] = {}

    def walk(cmd: Any, prefix: str) -> None:
        if hasattr(cmd, "commands"):  # a group
            for name, sub in cmd.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            out[prefix] = cmd

    walk(root, "")
    return out


COMMANDS = _commands()


def _visible_options(cmd: Any) -> list[Any]:
    return [p for p in cmd.params if hasattr(p, "opts") and p.opts[0].startswith("-") and not p.hidden
            and p.name != "help"]  # fmt: skip


def _choices(opt: Any) -> list[str] | None:
    """The values an option accepts when they form a closed set (an Enum annotation), else None."""
    annotation = opt.type_descriptor.annotation
    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, enum.Enum):
            return [str(m.value) for m in t]
    return None


def test_the_tables_name_every_command() -> None:
    assert set(COMMANDS) == PRINTS_RESULTS | WRITES_FILES


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_short_flags_mean_one_thing_everywhere(name: str) -> None:
    for opt in _visible_options(COMMANDS[name]):
        longs = [o for o in opt.opts if o.startswith("--")]
        for short in (o for o in opt.opts + opt.secondary_opts if not o.startswith("--")):
            assert short in SHORT_FLAGS, f"{name}: {short} is not in the conventions table"
            assert SHORT_FLAGS[short] in longs, f"{name}: {short} means {longs}, not {SHORT_FLAGS[short]}"
        for short, long in SHORT_FLAGS.items():
            if long in longs:
                assert short in opt.opts, f"{name}: {long} lacks its short flag {short}"


@pytest.mark.parametrize("name", sorted(PRINTS_RESULTS))
def test_result_commands_take_format_and_out(name: str) -> None:
    opts = {o: p for p in _visible_options(COMMANDS[name]) for o in p.opts}
    assert "--format" in opts and "-f" in opts and "--out" in opts and "-o" in opts, name
    fmt = opts["--format"]
    shown = _choices(fmt) or (fmt.metavar or "").strip("[]").split("|")
    assert shown == list(FORMATS), name


# Commands that can show a progress bar: each takes --no-progress (the bar also hides itself when output is not a
# terminal table).
SHOWS_PROGRESS = {"ingest", "extract", "worker", "train", "sweep", "compare", "zeroshot", "vqa run", "store verify"}


@pytest.mark.parametrize("name", sorted(SHOWS_PROGRESS))
def test_progress_commands_take_no_progress(name: str) -> None:
    opts = {o for p in _visible_options(COMMANDS[name]) for o in p.opts}
    assert "--no-progress" in opts, name


@pytest.mark.parametrize("name", sorted(WRITES_FILES))
def test_file_writing_commands_take_out(name: str) -> None:
    opts = {o for p in _visible_options(COMMANDS[name]) for o in p.opts}
    assert {"--out", "-o"} <= opts and "--format" not in opts, name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_choices_are_listed(name: str) -> None:
    for opt in _visible_options(COMMANDS[name]):
        if set(opt.opts) & CHOICES:
            listed = _choices(opt) or (opt.metavar or "").strip("[]").split("|")
            assert len(listed) > 1, f"{name}: {opt.opts} should list its choices"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_help_renders(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, *name.split(), "--help")
    assert code == 0 and "Usage" in out


def test_layer_option_is_spelled_alike() -> None:
    for name in ("extract", "submit", "train", "sweep", "compare", "export"):
        opts = {o for p in _visible_options(COMMANDS[name]) for o in p.opts}
        assert {"--layers", "--layer", "-l"} <= opts, name


@pytest.mark.parametrize(
    ("args", "new"),
    [
        (["ingest", "x", "-f", "knee", "-d", "k"], "--layout knee"),
        (["train", "-t", "grade", "-f", "fs-0123"], "--feature-set fs-0123"),
        (["compare", "-t", "grade", "-f", "fs-a", "-f", "fs-b"], "--feature-set fs-b"),
        (["train", "-t", "grade", "-o", "json"], "--format json"),
    ],
)
def test_format_and_out_mistakes_fail_in_one_line_naming_the_right_option(
    args: list[str], new: str, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    code, _, err = run_cli(capsys, *args, "--store", str(tmp_path / "s"))
    assert code != 0
    assert new in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["ingest", "x", "--layout", "knee", "-d", "k", "--json"],
        ["ingest", "x", "--layout", "knee", "-d", "k", "--seed", "1"],
        ["train", "-t", "grade", "--output", "json"],
        ["sweep", "-t", "grade", "--seed", "3"],
        ["extract", "-d", "x", "-m", "y", "-j", "2"],
    ],
)
def test_spellings_of_unreleased_versions_are_plain_usage_errors(
    args: list[str], capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    code, _, err = run_cli(capsys, *args, "--store", str(tmp_path / "s"))
    assert code == 2 and "No such option" in err and len(err.strip().splitlines()) == 1, err
