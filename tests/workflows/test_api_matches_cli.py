"""One definition of every option: each CLI command's long options are parameters of its workflow function, with
the same name and the same default; ``import medprobe`` exposes the functions and documents every parameter."""

from __future__ import annotations

import enum
import inspect
import pydoc
from typing import Any

import pytest

import medprobe
from tests.cli.test_conventions import COMMANDS  # every command of the CLI, by its name

# command -> the workflow function it calls
API: dict[str, Any] = {
    "ingest": medprobe.ingest,
    "datasets": medprobe.datasets,
    "models": medprobe.models,
    "extract": medprobe.extract,
    "submit": medprobe.submit,
    "worker": medprobe.worker,
    "status": medprobe.status,
    "train": medprobe.train,
    "sweep": medprobe.sweep,
    "compare": medprobe.compare,
    "report": medprobe.report,
    "zeroshot": medprobe.zeroshot,
    "search": medprobe.search,
    "sql": medprobe.sql,
    "export": medprobe.export,
    "vqa ingest": medprobe.vqa.ingest,
    "vqa run": medprobe.vqa.run,
    "vqa compare": medprobe.vqa.compare,
    "vqa report": medprobe.vqa.report,
}
# Options that choose how the CLI renders a result, not what is computed; the workflow returns the result instead.
RENDERING = {"format"}
# Commands whose --out names the rendered file (the others write files and take ``out``).
RENDERED_OUT = {"ingest", "datasets", "models", "extract", "submit", "worker", "status", "train", "sweep", "compare",
                "zeroshot", "search", "sql", "vqa ingest", "vqa run", "vqa compare"}  # fmt: skip




def _plain(value: Any) -> Any:
    """A default as the workflow sees it: enum members as their values, empty lists as None."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple) and not value:
        return None
    return value


def _name(param: Any) -> str:
    """The Python name a command parameter is given: the first long option spelled with underscores."""
    longs = [o for o in param.opts if o.startswith("--")]
    return longs[0][2:].replace("-", "_") if longs else param.name


@pytest.mark.parametrize("command", sorted(API))
def test_every_cli_option_is_a_parameter_with_the_same_name_and_default(command: str) -> None:
    cli = COMMANDS[command]
    signature = inspect.signature(API[command])
    for param in cli.params:
        if param.name in {"help", "fmt"} | RENDERING or param.hidden:
            continue
        if param.name == "out" and command in RENDERED_OUT:
            continue
        name = _name(param)
        assert param.name == name, f"{command}: option {param.opts} is received as {param.name!r}, not {name!r}"
        assert name in signature.parameters, f"{command}: {param.opts} is not a parameter of {API[command].__name__}"
        api_param = signature.parameters[name]
        expected = None if param.required else _plain(param.default)
        got = None if api_param.default is inspect.Parameter.empty else _plain(api_param.default)
        assert got == expected, f"{command} {param.opts}: CLI default {expected!r}, API default {got!r}"
        assert api_param.kind is inspect.Parameter.KEYWORD_ONLY, f"{command}: {name} should be keyword-only"


@pytest.mark.parametrize("command", sorted(API))
def test_every_workflow_takes_a_store_and_is_documented(command: str) -> None:
    function = API[command]
    params = inspect.signature(function).parameters
    if command != "models":  # models reads no store
        assert "store" in params, command
    text = pydoc.render_doc(function)
    assert function.__doc__ and len(function.__doc__.strip()) > 40, command
    for name in params:
        assert name in text, f"{command}: help() does not mention {name}"
        assert name in function.__doc__, f"{command}: the docstring does not say what {name} is"


def test_the_store_option_also_works_before_the_subcommand(tmp_path, capsys) -> None:
    from medprobe.featurestore import FeatureStore
    from tests.helpers.cli import run_cli

    url = str(tmp_path / "s")
    FeatureStore.open(url, create=True)
    code, out, err = run_cli(capsys, "-s", url, "sql", "SELECT count(*) AS n FROM images", "-f", "json")
    assert code == 0, err
    assert '"n": 0' in out
    code, _, err = run_cli(capsys, "--store", str(tmp_path / "missing"), "datasets")
    assert code != 0 and "missing" in err  # the root --store is the store used, not the default


def test_exit_codes_name_the_kind_of_error(tmp_path, capsys) -> None:
    from medprobe import errors
    from medprobe.featurestore import FeatureStore
    from tests.helpers.cli import run_cli

    url = str(tmp_path / "s")
    FeatureStore.open(url, create=True)
    assert run_cli(capsys, "train", "--no-such-option")[0] == errors.EXIT_USAGE
    assert run_cli(capsys, "-s", url, "train", "-t", "nope", "-m", "x")[0] == errors.EXIT_INPUT
    assert run_cli(capsys, "-s", url, "sql", "DELETE FROM images")[0] == errors.EXIT_INPUT
    code, _, err = run_cli(capsys, "models", "-m", str(tmp_path / "no-such-model-dir"))
    assert code == errors.EXIT_MODEL, err
    (tmp_path / "s" / "medprobe.json").write_text('{"format_version": 999}')
    code, _, err = run_cli(capsys, "-s", url, "datasets")
    assert code == errors.EXIT_STORE, err
    codes = {errors.EXIT_FAILURE, errors.EXIT_USAGE, errors.EXIT_INPUT, errors.EXIT_STORE, errors.EXIT_MODEL,
             errors.EXIT_INTERRUPTED}  # fmt: skip
    assert len(codes) == 6
