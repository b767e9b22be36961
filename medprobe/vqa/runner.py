"""``medprobe vqa run``: score an item set with a VLM, resumably, and compute its metrics.

A run's id is a digest of everything that changes its answers (item set, model and revision, dtype, mode, shots,
fixed exemplars, seed, rotations, split, prompt version, decoding length), so running the same command again after
a kill resumes that run: predictions already committed are not scored again.

Open-ended items (no options) are asked with the short-answer prompt and scored against their reference: in
``generate`` mode the answer read from the generation gets exact match, token F1, token recall and (yes/no
references) yes/no accuracy; in ``loglik`` mode the reference answer's log-likelihood is stored (no parsing, no right
or wrong). ``letter`` mode needs options and refuses them. Predictions are committed in small
fragments as they are made; each is atomic, so a killed run loses at most the fragment in flight.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medprobe.adapters.prompts import has_thinking_switch
from medprobe.errors import CorruptDataError, InvalidInputError, NotFoundError
from medprobe.featurestore import stable_hash, start_run
from medprobe.progress import progress_bar
from medprobe.schemas.tables import VqaPredictionRow
from medprobe.vqa.metrics import check_by, vqa_metrics
from medprobe.vqa.open_answers import open_scores
from medprobe.vqa.parse import parse_answer, parse_open, reasoning_of
from medprobe.vqa.prompting import (
    LETTERS,
    OPEN_INSTRUCTION,
    OPEN_REASONING_INSTRUCTION,
    PROMPT_VERSION,
    REASONING_INSTRUCTION,
    Item,
    choose_exemplars,
    exemplar_text,
    option_order,
    question_text,
    shown_options,
)
from medprobe.vqa.scoring import MODES, Scored, VlmScorer, choice_of

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore

COMMIT_EVERY = 16
ANSWER_TOKENS = 8  # generate: enough for a letter or a short option text
OPEN_ANSWER_TOKENS = 32  # generate, open-ended items: a short phrase
ANSWER_TYPES = ("all", "closed", "open")  # --answer-type: which items a run scores
REASONING_TOKENS = 512  # generate --reasoning: room to reason before the answer


@dataclass
class VqaRunSpec:
    """What to score and how."""

    item_set: str
    model: str
    mode: str = "loglik"
    shots: int = 0
    fixed_shots: tuple[str, ...] = ()
    circular: bool = False
    split: str = "test"
    seed: int = 0  # the few-shot exemplar draw
    boot_seed: int = 0  # the bootstrap replicates
    max_new_tokens: int | None = None  # generate: the token cap (default 8, open items 32; 512 with reasoning)
    reasoning: bool = False  # generate: ask for reasoning before the answer (REASONING_INSTRUCTION), parse after it
    shots_with_images: bool = False  # exemplars shown with their images (models that take several per prompt)
    by: tuple[str, ...] = ()  # category columns to break accuracy down by (default: every one the items carry)
    n_boot: int = 1000
    device: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    limit: int | None = None
    answer_type: str = "all"  # all | closed (multiple choice) | open (open-ended items only)
    save_activations: bool = False  # every layer's answer-position state of every item, as a feature set


def load_items(store: FeatureStore, item_set: str) -> list[Item]:
    """Every item of ``item_set``; NotFoundError naming the sets that exist."""
    rows = store.sql("SELECT * FROM vqa_items WHERE item_set = ? ORDER BY item_id", [item_set]).to_pylist()
    if not rows:
        sets = store.sql("SELECT DISTINCT item_set FROM vqa_items ORDER BY 1").column(0).to_pylist()
        raise NotFoundError(f"no VQA item set {item_set!r}; the store has: {', '.join(sets) or 'none'} "
                            "(medprobe vqa ingest SOURCE --name NAME)")  # fmt: skip
    return [Item.from_row(r) for r in rows]


def items_digest(items: list[Item]) -> str:
    """The sha256 of what the model is asked: every item's question, context, options, answer, split, group and
    image hashes."""
    return stable_hash([[it.item_id, list(it.image_hashes), it.question, it.context, [list(o) for o in it.options],
                         it.answer, it.split, it.group_id] for it in items])  # fmt: skip


def _exemplars(spec: VqaRunSpec, items: list[Item], item: Item) -> list[Item]:
    if spec.fixed_shots:
        by_id = {i.item_id: i for i in items}
        missing = [i for i in spec.fixed_shots if i not in by_id]
        if missing:
            raise InvalidInputError(f"--fixed-shots: no items {missing} in item set {spec.item_set!r}")
        return [by_id[i] for i in spec.fixed_shots if i != item.item_id]
    pool = [i for i in items if i.split == "train"]
    return choose_exemplars(item, pool, spec.shots, spec.seed)


def run_vqa(store: FeatureStore, spec: VqaRunSpec, *, show_progress: bool = True) -> dict[str, Any]:
    """Score (or resume) the run; returns its document (run id, counts, metrics)."""
    from medprobe.adapters.loading import load_adapter
    from medprobe.extractor.pipeline import ExtractOptions

    if spec.mode not in MODES:
        raise InvalidInputError(f"--mode {spec.mode!r}: choose from {', '.join(MODES)}")
    if spec.shots and spec.fixed_shots:
        raise InvalidInputError("give --shots K or --fixed-shots ID,ID, not both")
    if spec.reasoning and spec.mode != "generate":
        raise InvalidInputError(f"--reasoning needs --mode generate (the model must write its reasoning); "
                                f"--mode {spec.mode} reads no text")  # fmt: skip
    if spec.shots_with_images and not (spec.shots or spec.fixed_shots):
        raise InvalidInputError("--shots-with-images shows the exemplars' images: give --shots K or --fixed-shots too")
    if spec.shots_with_images and spec.save_activations:
        raise InvalidInputError("--save-activations stores states of prompts with text exemplars; run it without "
                                "--shots-with-images")  # fmt: skip
    if spec.answer_type not in ANSWER_TYPES:
        raise InvalidInputError(f"--answer-type {spec.answer_type!r}: choose from {', '.join(ANSWER_TYPES)}")
    open_tokens = spec.max_new_tokens or (REASONING_TOKENS if spec.reasoning else OPEN_ANSWER_TOKENS)
    if spec.max_new_tokens is None:
        spec.max_new_tokens = REASONING_TOKENS if spec.reasoning else ANSWER_TOKENS
    items = load_items(store, spec.item_set)
    wanted_kind = {"all": (True, False), "closed": (False,), "open": (True,)}[spec.answer_type]
    todo_items = [i for i in items if i.split == spec.split and i.is_open in wanted_kind][: spec.limit]
    if not todo_items:
        splits = sorted({i.split for i in items})
        kind = "" if spec.answer_type == "all" else f" {spec.answer_type}"
        raise InvalidInputError(f"item set {spec.item_set!r} has no{kind} {spec.split!r} items; its splits: {splits}")
    has_open = any(i.is_open for i in todo_items)
    if has_open and spec.mode == "letter":
        example = next(i.item_id for i in todo_items if i.is_open)
        n_open = sum(i.is_open for i in todo_items)
        raise InvalidInputError(f"--mode letter needs options; {n_open} of the items are open-ended (e.g. {example}): "
                                "use --mode generate or loglik, or --answer-type closed")  # fmt: skip
    check_by(todo_items, spec.by)  # before the model loads
    store.check_writable()
    options = ExtractOptions.model_validate({"dataset": spec.item_set, "model": spec.model, "device": spec.device,
                                             "dtype": spec.dtype})  # fmt: skip
    adapter = load_adapter(spec.model, device=options.resolved_device(), dtype=options.resolved_dtype(),
                           trust_remote_code=spec.trust_remote_code, allow_pickle=spec.allow_pickle)  # fmt: skip
    scorer = VlmScorer(adapter)
    scorer.thinking = spec.reasoning and has_thinking_switch(getattr(adapter.preprocessor, "processor", None))
    ident = adapter.identity
    config = {
        "item_set": spec.item_set, "model_id": ident.model_id, "revision": ident.model_revision,
        "preprocessing": ident.preprocessing, "dtype": options.resolved_dtype(), "mode": spec.mode,
        "shots": spec.shots, "fixed_shots": list(spec.fixed_shots), "seed": spec.seed, "circular": spec.circular,
        "split": spec.split, "prompt": PROMPT_VERSION, "max_new_tokens": spec.max_new_tokens if spec.mode ==
        "generate" else None, "limit": spec.limit,
        # the items' content (questions, options, answers, images; exemplars too): a set re-ingested with other
        # content under the same name is a new run, never a resume of answers to other questions
        "items_sha256": items_digest(items),
        # only when asked, so the ids of runs without it stay what they were
        **({"reasoning": True, "reasoning_prompt": REASONING_INSTRUCTION} if spec.reasoning else {}),
        **({"thinking_template": True} if scorer.thinking else {}),
        **({"answer_type": spec.answer_type} if spec.answer_type != "all" else {}),
        **({"shots_with_images": True} if spec.shots_with_images else {}),
        **({"open_prompt": OPEN_REASONING_INSTRUCTION if spec.reasoning else OPEN_INSTRUCTION,
            "open_max_new_tokens": open_tokens if spec.mode == "generate" else None} if has_open else {}),
    }  # fmt: skip
    run_id = "vqa-" + stable_hash(config)[:20]
    done = {
        (r["item_id"], r["rotation"])
        for r in store.sql("SELECT item_id, rotation FROM vqa_predictions WHERE run_id = ?", [run_id]).to_pylist()
    }
    uris = dict(
        (r["image_hash"], r["uri"]) for r in store.sql("SELECT image_hash, uri FROM images").to_pylist()
    )  # fmt: skip
    work = [(it, rot) for it in todo_items for rot in (range(it.n_options) if spec.circular and not it.is_open
                                                       else [0])
            if (it.item_id, rot) not in done]  # fmt: skip
    template = scorer.prompt("{question}")
    # recorded under the options' names (the run id hashes the config, whose "seed" is the exemplar draw's)
    params = {**{k: v for k, v in config.items() if k != "seed"}, "shots_seed": spec.seed, "run_id": run_id,
              "resumed_with_done": len(done), "boot_seed": spec.boot_seed, "n_boot": spec.n_boot,
              "prompt_template": template,
              "prompt_template_sha256": hashlib.sha256(template.encode()).hexdigest()}  # fmt: skip
    with start_run(store, "vqa", params, run_id=run_id) as run:
        exemplar_ids = _score_work(store, spec, scorer, items, work, uris, run_id, show_progress, open_tokens)
        saved: dict[str, str] = {}
        if spec.save_activations:
            saved = _save_states(store, spec, scorer, items, uris, options.resolved_dtype())
            run.summary["activations"] = saved
        store.refresh()
        rows = store.sql("SELECT * FROM vqa_predictions WHERE run_id = ?", [run_id]).to_pylist()
        by_id = {i.item_id: i for i in items}
        wanted = {i.item_id for i in todo_items}
        metrics = vqa_metrics([r for r in rows if r["item_id"] in wanted], by_id, n_boot=spec.n_boot,
                              seed=spec.boot_seed, by=spec.by)  # fmt: skip
        run.summary.update({"n_items": metrics["n_items"], "accuracy": metrics["accuracy"]["value"],
                            **({"open_token_recall": metrics["open"]["token_recall"]["value"]}
                               if "token_recall" in metrics.get("open", {}) else {}),
                            "scored_now": len(work), "exemplar_ids": json.dumps(exemplar_ids)[:100_000]})  # fmt: skip
    return {"run_id": run_id, "item_set": spec.item_set, "model": spec.model, "mode": spec.mode, "split": spec.split,
            "shots": spec.shots, "fixed_shots": list(spec.fixed_shots), "circular": spec.circular,
            "scored_now": len(work), "already_done": len(done), **({"activations": saved} if saved else {}),
            **metrics}  # fmt: skip


def _score_work(store: FeatureStore, spec: VqaRunSpec, scorer: VlmScorer, items: list[Item],
                work: list[tuple[Item, int]], uris: dict[str, str], run_id: str,
                show_progress: bool, open_tokens: int) -> dict[str, list[str]]:  # fmt: skip
    """Ask the model every (item, rotation) still to do, committing predictions every ``COMMIT_EVERY``; returns the
    exemplar ids each item was shown."""
    buffer: list[VqaPredictionRow] = []
    exemplar_ids: dict[str, list[str]] = {}
    with progress_bar("items", disable=not show_progress) as bar:
        task = bar.add_task(f"vqa {spec.item_set} ({spec.mode})", total=len(work))
        for it, rot in work:
            exemplars = _exemplars(spec, items, it)
            exemplar_ids[it.item_id] = [e.item_id for e in exemplars]
            images = [_load(store, _uri(uris, h), h) for h in it.image_hashes]
            shown = shown_options(it, rot)
            if spec.shots_with_images:  # each exemplar's images before its text, then the question's
                pictured = [([_load(store, _uri(uris, h), h) for h in ex.image_hashes], exemplar_text(ex))
                            for ex in exemplars]  # fmt: skip
                text = question_text(it, rot, (), reasoning=spec.reasoning)
            else:
                pictured, text = [], question_text(it, rot, exemplars, reasoning=spec.reasoning)
            scored = _score(scorer, spec, it, Prompt(images, text, pictured), shown, open_tokens)
            buffer.append(_row(run_id, spec.item_set, it, rot, shown, scored, reasoning=spec.reasoning))
            if len(buffer) >= COMMIT_EVERY:
                store.append("vqa_predictions", buffer)
                buffer = []
            bar.advance(task, 1)
    if buffer:
        store.append("vqa_predictions", buffer)
    return exemplar_ids


def _save_states(store: FeatureStore, spec: VqaRunSpec, scorer: VlmScorer, items: list[Item], uris: dict[str, str],
                 compute_dtype: str) -> dict[str, str]:  # fmt: skip
    """Every multiple-choice item's answer-position state of every layer, stored as a feature set
    (``--save-activations``)."""
    from medprobe.vqa.activations import dataset_name, save_answer_states

    label = f"item set {spec.item_set}, shots {spec.shots}, fixed {list(spec.fixed_shots)}, seed {spec.seed}"
    items = [it for it in items if not it.is_open]  # the task is the gold letter: multiple-choice items only
    feature_set_id = save_answer_states(
        store, scorer, spec.item_set, items, lambda it: _exemplars(spec, items, it),
        lambda it: [_load(store, _uri(uris, h), h) for h in it.image_hashes], prompt_label=label,
        compute_dtype=compute_dtype,
    )  # fmt: skip
    return {"feature_set_id": feature_set_id, "dataset": dataset_name(spec.item_set)}


def _load(store: FeatureStore, uri: str, image_hash: str) -> Any:
    """A decoded image from a path/URL or from the store's own blobs (``store:`` URIs), checked against the hash it
    was ingested with: a file changed on disk since is refused, never scored under its old hash."""
    from medprobe.featurestore import STORE_URI
    from medprobe.imaging import decode_image, read_file_bytes

    data = store.read_bytes(uri) if uri.startswith(STORE_URI) else read_file_bytes(uri)
    if hashlib.sha256(data).hexdigest() != image_hash:
        raise CorruptDataError(
            f"{uri}: its bytes changed since `medprobe vqa ingest` (sha256 is no longer {image_hash[:12]}...); "
            "re-run vqa ingest for this item set"
        )
    return decode_image(data, source=uri)


def _uri(uris: dict[str, str], image_hash: str) -> str:
    if image_hash not in uris:
        raise NotFoundError(f"image {image_hash} of a VQA item is not in the images table; re-run medprobe vqa ingest")
    uri = uris[image_hash]
    return uri


@dataclass
class Prompt:
    """What one item is asked with: its images and text, and exemplars shown with their images."""

    images: list
    text: str
    exemplars: list


def _score(scorer: VlmScorer, spec: VqaRunSpec, it: Item, p: Prompt, shown: list[tuple[str, str]],
           open_tokens: int) -> Scored:  # fmt: skip
    if it.is_open:  # the reference answer's log-likelihood, or a free answer
        if spec.mode == "loglik":
            return scorer.loglik(p.images, p.text, [it.answer], p.exemplars)
        return scorer.generate(p.images, p.text, open_tokens, p.exemplars)
    if spec.mode == "loglik":
        return scorer.loglik(p.images, p.text, [t for _, t in shown], p.exemplars)
    if spec.mode == "letter":
        return scorer.letter(p.images, p.text, [letter for letter, _ in shown], p.exemplars)
    return scorer.generate(p.images, p.text, spec.max_new_tokens or ANSWER_TOKENS, p.exemplars)


def _row(run_id: str, item_set: str, it: Item, rot: int, shown: list[tuple[str, str]], s: Scored, *,
         reasoning: bool = False) -> VqaPredictionRow:  # fmt: skip
    order = option_order(it, rot)
    thinking = reasoning_of(s.generation) if reasoning and s.generation is not None else None
    if it.is_open:
        return _open_row(run_id, item_set, it, s, reasoning=reasoning, thinking=thinking)
    if s.generation is not None:
        letter, step = parse_answer(s.generation, shown, reasoning=reasoning)
        predicted = None if letter is None else order[LETTERS.index(letter)]
    else:
        idx = choice_of(s)
        predicted = None if idx is None else order[idx]
        step = "loglik" if s.loglik_sum is not None else "letter"
    return VqaPredictionRow(
        run_id=run_id, item_set=item_set, item_id=it.item_id, rotation=rot, option_order=order,
        loglik_sum=s.loglik_sum, loglik_mean=s.loglik_mean, n_tokens=s.n_tokens, letter_probs=s.letter_probs,
        generation=s.generation, predicted=predicted, parser_step=step, correct=predicted == it.answer,
        reasoning=thinking,
    )  # fmt: skip


def _open_row(run_id: str, item_set: str, it: Item, s: Scored, *, reasoning: bool, thinking: str | None
              ) -> VqaPredictionRow:  # fmt: skip
    """An open-ended item's prediction: the reference's log-likelihood (no verdict), or the answer read from the
    generation with its scores against the reference."""
    base: dict[str, Any] = {"run_id": run_id, "item_set": item_set, "item_id": it.item_id, "rotation": 0,
                            "option_order": []}  # fmt: skip
    if s.generation is None:
        return VqaPredictionRow(**base, loglik_sum=s.loglik_sum, loglik_mean=s.loglik_mean, n_tokens=s.n_tokens,
                                parser_step="loglik", correct=None)  # fmt: skip
    answer, step = parse_open(s.generation, reasoning=reasoning)
    scores = open_scores(answer, it.answer)
    return VqaPredictionRow(
        **base, generation=s.generation, parser_step=step, correct=scores["exact_match"], answer_text=answer,
        exact_match=scores["exact_match"], token_f1=scores["token_f1"], token_recall=scores["token_recall"],
        yes_no_correct=scores["yes_no"], reasoning=thinking,
    )  # fmt: skip
