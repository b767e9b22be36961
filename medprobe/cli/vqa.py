"""``medprobe vqa``: multiple-choice medical VQA items (ingest) and what a VLM answers to them (run)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from medprobe.cli.common import console, err_console
from medprobe.cli.options import (
    AllowPickleOpt,
    DeviceOpt,
    ModelOpt,
    Output,
    ProgressOutput,
    StoreOpt,
    TrustRemoteCodeOpt,
    with_group,
)
from medprobe.schemas.vocab import ComputeDType, Split, VqaAnswerType, VqaLayout, VqaMode
from medprobe.workflows import vqa as wf
from medprobe.workflows.common import N_BOOT

ItemSetOpt = Annotated[str, typer.Option("--items", help="The item set (its --name at vqa ingest).")]


def _fmt(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "-"
    return f"{entry['value']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


@with_group(Output, "output")
def ingest(
    output: Output,
    source: Annotated[
        str,
        typer.Argument(help="Items file (.jsonl/.csv/.tsv), NEJM folder, or a VQA-RAD, SLAKE, PathVQA, OmniMedVQA "
                       "folder, PMC-VQA CSV or VQA-Med qa_pairs .txt (or folder)."),
    ],
    name: Annotated[str, typer.Option("--name", help="Name of the item set in the store.")],
    layout: Annotated[
        VqaLayout | None, typer.Option("--layout", help="The source's layout (default: detected).")
    ] = None,
) -> None:
    """Items into vqa_items; images content-addressed into images (unreadable ones: failures rows)."""
    output.check()
    summary = wf.ingest(source=source, name=name, layout=layout, store=output.store)
    document = summary.to_dict()

    def show() -> None:
        table = Table(title=f"vqa ingest {name} ({summary.layout})")
        table.add_column("what")
        table.add_column("count", justify="right")
        for what, n in (("items read", summary.items_read), ("items new", summary.items_new),
                        ("items unchanged", summary.items_unchanged),
                        ("items retired (no longer in the source)", summary.items_retired),
                        ("images new", summary.images_new),
                        ("items left out: unreadable image", summary.failures),
                        *((f"split {k}", v) for k, v in sorted(summary.by_split.items())),
                        *((k, v) for k, v in sorted(summary.by_kind.items())),
                        *((f"skipped: {k}", v) for k, v in summary.skipped.items())):  # fmt: skip
            table.add_row(what, str(n))
        console.print(table)

    output.emit(rows=[{k: v for k, v in document.items() if not isinstance(v, dict)}], document=document,
         show=show)  # fmt: skip


@with_group(ProgressOutput, "output")
def run(
    output: ProgressOutput,
    items: ItemSetOpt,
    model: ModelOpt,
    mode: Annotated[VqaMode, typer.Option("--mode", help="How the answer is read.")] = VqaMode.loglik,
    shots: Annotated[int, typer.Option("--shots", min=0, help="Few-shot exemplars from the train split.")] = 0,
    fixed_shots: Annotated[
        list[str] | None, typer.Option("--fixed-shots", help="These item ids as exemplars (the study's setup).")
    ] = None,
    shots_with_images: Annotated[
        bool, typer.Option("--shots-with-images", help="Show each exemplar with its images (multi-image models).")
    ] = False,
    circular: Annotated[bool, typer.Option("--circular", help="Score every rotation of the options.")] = False,
    split: Annotated[Split, typer.Option("--split", help="The items scored.")] = Split.test,
    shots_seed: Annotated[int, typer.Option("--shots-seed", help="Seed of the few-shot exemplar draw.")] = 0,
    boot_seed: Annotated[int, typer.Option("--boot-seed", help="Seed of the bootstrap replicates.")] = 0,
    max_new_tokens: Annotated[
        int | None,
        typer.Option("--max-new-tokens", min=1, help="generate: token cap (8; open items 32; 512 with --reasoning)."),
    ] = None,
    reasoning: Annotated[
        bool, typer.Option("--reasoning", help="generate: reason step by step, then answer in <answer> tags.")
    ] = False,
    by: Annotated[
        list[str] | None,
        typer.Option("--by", help="Category columns to break accuracy down by, e.g. question_type,image_organ."),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N items.")] = None,
    answer_type: Annotated[
        VqaAnswerType,
        typer.Option("--answer-type", help="Score all items, multiple choice only (closed) or open-ended only."),
    ] = VqaAnswerType.all,
    save_activations: Annotated[
        bool,
        typer.Option(
            "--save-activations",
            help="Also store every layer's answer-position state of every item (all splits) as a feature set, "
            "with a dataset vqa-<items> (task: answer) for `medprobe sweep`.",
        ),
    ] = False,
    n_boot: Annotated[int, typer.Option("--n-boot", min=1, help="Bootstrap replicates for the CIs.")] = N_BOOT,
    device: DeviceOpt = None,
    dtype: Annotated[ComputeDType | None, typer.Option("--dtype", help="Compute dtype.")] = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
    allow_pickle: AllowPickleOpt = False,
) -> None:
    """Ask a VLM every item (resumable: the same command continues a killed run); accuracy with CIs."""
    output.check()
    result = wf.run(
        items=items, model=model, mode=mode, shots=shots, fixed_shots=fixed_shots, circular=circular, split=split,
        shots_seed=shots_seed, boot_seed=boot_seed, max_new_tokens=max_new_tokens, reasoning=reasoning, by=by,
        limit=limit, answer_type=answer_type, shots_with_images=shots_with_images,
        save_activations=save_activations, n_boot=n_boot, device=device, dtype=dtype,
        trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
        no_progress=output.quiet, store=output.store,
    )  # fmt: skip
    doc = result.to_dict()

    def show() -> None:
        table = Table(title=f"vqa {items} · {model} · {mode.value}  run {doc['run_id']}")
        for col in ("metric", "value [95% CI, clustered by group]"):
            table.add_column(col)
        table.add_row("accuracy (multiple choice right, open exact match)" if "open" in doc else "accuracy",
                      _fmt(doc["accuracy"]))  # fmt: skip
        if "closed" in doc:
            table.add_row(f"multiple choice accuracy (n={doc['closed']['n_items']})", _fmt(doc["closed"]["accuracy"]))
        for key, entry in _open_rows(doc.get("open") or {}):
            table.add_row(key, entry)
        for key in ("circular_accuracy", "mean_over_rotations"):
            if key in doc:
                table.add_row(key.replace("_", " "), _fmt(doc[key]))
        if doc["chance"] is not None:
            table.add_row("chance", f"{doc['chance']:.3f}")
        if "majority" in doc:
            table.add_row(f"majority (always {doc['majority']['letter']})", f"{doc['majority']['accuracy']:.3f}")
        table.add_row("parse failures", f"{doc['parse_failure_rate']:.1%}")
        cal: dict[str, Any] = doc.get("calibration") or {}
        if cal:
            table.add_row("Brier / ECE", f"{cal['brier']:.3f} / {cal['ece']:.3f}")
        if doc["letters"]["gold"]:
            table.add_row("letters predicted / gold", f"{doc['letters']['predicted']} / {doc['letters']['gold']}")
        for column, values in (doc.get("by") or {}).items():
            for value, entry in values.items():
                extra = ""
                if "open" in entry:
                    extra = (f"  closed {_fmt(entry['closed'])} (n={entry['closed']['n']})  open token recall "
                             f"{_fmt(entry['open'].get('token_recall'))} (n={entry['open']['n_items']})")  # fmt: skip
                table.add_row(f"{column} = {value} (n={entry.get('n')})", _fmt(entry) + extra)
        console.print(table)
        if doc.get("activations"):
            a = doc["activations"]
            console.print(f"answer-position states: feature set {a['feature_set_id']}; probe them with "
                          f"medprobe sweep -d {a['dataset']} -t answer --feature-set {a['feature_set_id']}",
                          highlight=False)  # fmt: skip
        if doc["already_done"]:
            err_console.print(f"resumed: {doc['already_done']} predictions were already stored", highlight=False)

    output.emit(rows=result.rows(), document=doc, show=show)


def _open_rows(metrics: dict) -> list[tuple[str, str]]:
    """The open-ended items' lines of the run table."""
    n = metrics.get("n_items")
    rows = [(f"open: {key.replace('_', ' ')} (n={n})", _fmt(metrics[key]))
            for key in ("exact_match", "token_f1", "token_recall", "loglik_per_token") if key in metrics]  # fmt: skip
    if metrics.get("yes_no_accuracy", {}).get("n"):
        rows.append((f"open: yes/no accuracy (n={metrics['yes_no_accuracy']['n']})", _fmt(metrics["yes_no_accuracy"])))
    if "perplexity" in metrics:
        rows.append(("open: reference perplexity", f"{metrics['perplexity']:.3f}"))
    return rows


@with_group(Output, "output")
def compare(
    output: Output,
    run_a: Annotated[str, typer.Argument(help="Run id of A.")],
    run_b: Annotated[str, typer.Argument(help="Run id of B (the reference).")],
    n_boot: Annotated[int, typer.Option("--n-boot", min=1, help="Bootstrap replicates for the CI.")] = N_BOOT,
    boot_seed: Annotated[int, typer.Option("--boot-seed", help="Seed of the bootstrap replicates.")] = 0,
) -> None:
    """Two runs on the same items: accuracy A - B (paired, group-clustered bootstrap) and McNemar's test."""
    output.check()
    result = wf.compare(run_a=run_a, run_b=run_b, n_boot=n_boot, boot_seed=boot_seed, store=output.store)
    doc = result.to_dict()

    def show() -> None:
        table = Table(title=f"vqa compare {run_a} - {run_b} ({doc['n_items']} items, {doc['n_groups']} groups)")
        for col in ("A", "B", "A-B [95% CI]", "p bootstrap", "only A right", "only B right", "p McNemar"):
            table.add_column(col)
        table.add_column("items")
        by = doc.get("by", {})
        rows = [("all", doc)] + [(f"{c} = {v}", e) for c, values in by.items() for v, e in values.items()]
        for name, e in rows:
            table.add_row(f"{e['accuracy_a']:.3f}", f"{e['accuracy_b']:.3f}",
                          f"{e['diff']:+.3f} [{e['ci_low']:+.3f}, {e['ci_high']:+.3f}]",
                          f"{e['p_bootstrap']:.3g}", str(e["only_a_right"]), str(e["only_b_right"]),
                          f"{e['p_mcnemar']:.3g}", f"{name} ({e['n_items']})")  # fmt: skip
        console.print(table)

    output.emit(rows=result.to_arrow(), document=doc, show=show)


def report(
    run_ids: Annotated[list[str], typer.Argument(help="Run ids of vqa runs.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Folder for the PNGs and summary.md.")] = "vqa-report",
    store: StoreOpt = None,
) -> None:
    """PNG plots (accuracy per category, letter distribution, reliability) and a Markdown summary."""
    for path in wf.report(run_ids=run_ids, out=out, store=store).paths:
        console.print(path)


def register(app: typer.Typer) -> None:
    """Add ``vqa ingest`` and ``vqa run``."""
    vqa_app = typer.Typer(help="Multiple-choice VQA: what a VLM says about the images.", no_args_is_help=True)
    app.add_typer(vqa_app, name="vqa")
    vqa_app.command("ingest")(ingest)
    vqa_app.command("run")(run)
    vqa_app.command("compare")(compare)
    vqa_app.command("report")(report)
