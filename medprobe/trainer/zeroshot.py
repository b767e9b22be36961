"""Zero-shot classification from stored image embeddings and class-prompt text embeddings (no training).

Prompts: each class gets the prompts of a template set (built in per modality, or a JSON file) with its class
phrase filled in, or the prompts a file lists for it. The template ensemble is averaged as CLIP does: each prompt
embedding L2-normalised, the mean taken, the mean normalised again. The image embedding is normalised too and
``logit = logit_scale * cosine`` (+ ``logit_bias`` for SigLIP).

Probabilities, as each model family defines them:

* softmax models (CLIP, BiomedCLIP): a softmax over the task's classes; multilabel: per finding, a softmax over
  {the finding's prompts, its negative prompts ("no <finding>")}.
* sigmoid models (SigLIP, MedSigLIP): each class's ``sigmoid(logit)``; binary: the positive class's sigmoid
  (the negative class gets the rest); multilabel: each finding's sigmoid; multiclass: the per-class sigmoids divided
  by their sum (a distribution with the same argmax and the same ranking of classes within an image).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import expit

from medprobe.errors import InvalidInputError
from medprobe.featurestore import new_id
from medprobe.trainer.bootstrap import metrics_with_ci
from medprobe.trainer.data import load_task_data, read_features
from medprobe.trainer.experiment import ExperimentSpec, ProbeOutcome, write_outcomes
from medprobe.trainer.protocol import ProtocolTiming, Setting
from medprobe.trainer.solvers.base import ProbeKind

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore

TEMPLATE_SETS: dict[str, list[str]] = {
    "generic": ["a photo of {}.", "an image of {}.", "a medical image of {}.", "a medical image showing {}."],
    "xray": ["a radiograph showing {}.", "an x-ray image of {}.", "a chest x-ray showing {}.", "an x-ray with {}."],
    "pathology": [
        "a histopathology image of {}.", "an H&E stained image of {}.", "a pathology slide showing {}.",
        "a histology image of {} tissue.",
    ],
    "dermatology": [
        "a dermoscopy image of {}.", "a clinical photo of a skin lesion: {}.", "a photo of {} on the skin.",
        "a dermatology image showing {}.",
    ],
    "fundus": [
        "a fundus photograph showing {}.", "a retinal image of {}.", "a color fundus image with {}.",
        "an eye fundus photo of {}.",
    ],
}  # fmt: skip
NEGATIVE = "no {}"  # a multilabel finding's negative class phrase


@dataclass
class ClassPrompts:
    """The prompts of each output: per class (binary/multiclass) or per finding (positive, and negative prompts)."""

    positive: list[list[str]]  # one prompt list per class / finding
    negative: list[list[str]] | None  # multilabel softmax models: each finding's negative prompts
    source: str  # the template set's name or the file, for the record

    def texts(self) -> list[str]:
        """Every prompt once, in a stable order."""
        lists = self.positive + (self.negative or [])
        return list(dict.fromkeys(t for prompts in lists for t in prompts))


def _looks_like_codes(names: Sequence[str]) -> bool:
    return all(re.fullmatch(r"[-+]?\d+(\.\d+)?|[A-Za-z]\d*|\d+[A-Za-z]?", n.strip()) for n in names)


def _fill(templates: Sequence[str], phrase: str, where: str) -> list[str]:
    if not templates or any("{}" not in t for t in templates):
        raise InvalidInputError(f"{where}: every template must contain {{}} where the class phrase goes")
    return [t.format(phrase) for t in templates]


def class_prompts(
    class_names: Sequence[str], kind: ProbeKind, templates: str, *, task: str, negatives: bool
) -> ClassPrompts:
    """Prompts for the task's classes from a built-in template set name or a JSON file.

    File forms: ``{"<class>": ["prompt", ...], ...}`` (every class listed), or ``{"templates": ["a photo of {}.",
    ...], "classes": {"<class>": "phrase"}}`` (phrases default to the class names); multilabel files may add
    ``"negative": {"<finding>": ["prompt", ...]}`` or a ``"negative_template"`` (default ``no {}``).
    """
    names = list(class_names)
    spec: dict = {}
    if templates in TEMPLATE_SETS:
        spec = {"templates": TEMPLATE_SETS[templates]}
        source = templates
    else:
        path = Path(templates)
        if not path.is_file():
            raise InvalidInputError(
                f"--templates {templates!r} is neither a built-in set ({', '.join(TEMPLATE_SETS)}) nor a file"
            )
        try:
            spec = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidInputError(f"--templates {path}: not valid JSON ({e}); see `medprobe zeroshot --help`") from e
        if not isinstance(spec, dict):
            raise InvalidInputError(f"--templates {path}: expected a JSON object of class -> prompts")
        source = str(path)
    phrases = spec.get("classes") or {}
    explicit = {k: v for k, v in spec.items() if k in names}
    if "templates" not in spec and not explicit:
        raise InvalidInputError(
            f"--templates {source}: lists no prompts for the classes of task {task!r} ({', '.join(names)}); give "
            '{"<class>": ["prompt", ...]} for each class, or {"templates": [...], "classes": {...}}'
        )
    if "templates" in spec and not phrases and not explicit and _looks_like_codes(names):
        raise InvalidInputError(
            f"task {task!r} names its classes by codes ({', '.join(names)}), which a text tower cannot read: write a "
            'templates file mapping each to words, e.g. {"templates": ["a knee radiograph showing {}."], "classes": '
            '{"0": "no osteoarthritis", ...}}, and pass --templates FILE'
        )
    positive = []
    for name in names:
        if name in explicit:
            prompts = explicit[name]
            if isinstance(prompts, str):
                prompts = [prompts]
            if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
                raise InvalidInputError(f"--templates {source}: class {name!r} needs a non-empty list of prompts")
            positive.append(list(prompts))
        elif "templates" in spec:
            positive.append(_fill(spec["templates"], str(phrases.get(name, name)), f"--templates {source}"))
        else:
            raise InvalidInputError(
                f"--templates {source}: no prompts for class {name!r} (it lists {sorted(explicit)})"
            )
    negative = None
    if kind == "multilabel" and negatives:
        given = spec.get("negative") or {}
        template = spec.get("negative_template", NEGATIVE)
        negative = []
        for name in names:
            if name in given:
                negative.append(list(given[name]) if not isinstance(given[name], str) else [given[name]])
            elif "templates" in spec:
                phrase = template.format(phrases.get(name, name))
                negative.append(_fill(spec["templates"], phrase, f"--templates {source}"))
            else:
                raise InvalidInputError(
                    f"--templates {source}: finding {name!r} needs negative prompts for a softmax model: add "
                    f'"negative": {{"{name}": ["..."]}}'
                )
    return ClassPrompts(positive, negative, source)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def class_embedding(prompt_embeddings: np.ndarray) -> np.ndarray:
    """The template ensemble of one class: mean of the normalised prompt embeddings, normalised (as CLIP)."""
    return _unit(_unit(prompt_embeddings).mean(axis=0))


def zeroshot_proba(
    image_embeddings: np.ndarray,
    positive: Sequence[np.ndarray],
    kind: ProbeKind,
    *,
    logit_scale: float,
    logit_bias: float | None,
    negative: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Class probabilities ``(images, outputs)`` shaped like a probe's (binary: two columns)."""
    img = _unit(image_embeddings)
    W = np.stack([class_embedding(p) for p in positive])
    logits = logit_scale * img @ W.T
    if logit_bias is not None:  # sigmoid models
        p = expit(logits + logit_bias)
        if kind == "binary":
            return np.column_stack([1.0 - p[:, 1], p[:, 1]])
        if kind == "multilabel":
            return p
        return p / p.sum(axis=1, keepdims=True)
    if kind == "multilabel":
        if negative is None:
            raise InvalidInputError("a softmax model needs negative prompts for multilabel zero-shot")
        Wn = np.stack([class_embedding(p) for p in negative])
        neg = logit_scale * img @ Wn.T
        return expit(logits - neg)  # a two-way softmax per finding
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def run_zeroshot(
    store: FeatureStore,
    spec: ExperimentSpec,
    run_id: str,
    prompts: ClassPrompts,
    embeddings: dict[str, np.ndarray],
    *,
    logit_scale: float,
    logit_bias: float | None,
    record: dict | None = None,
) -> ProbeOutcome:
    """Score the test split of ``spec``'s task from its feature set's embedding layer; write the result rows.

    ``embeddings`` maps every prompt text to its text-tower embedding. Nothing is fitted, so the training rows are
    not read; every labelled test image must have an embedding (unless ``spec.allow_missing``).
    """
    layer = spec.layers[0]
    data = load_task_data(store, spec.task, spec.feature_set_id, [layer], allow_missing=True)
    members = store.sql(
        "SELECT labels FROM dataset_images WHERE dataset = ? AND split = ?", [spec.task.dataset, spec.test_split]
    ).column("labels")
    labelled_test = sum(json.loads(v or "{}").get(spec.task.task) not in (None, "") for v in members.to_pylist())
    test = data.rows(spec.test_split)
    if not len(test):
        raise InvalidInputError(
            f"dataset {spec.task.dataset!r} has no labelled {spec.test_split!r} images with embeddings in "
            f"{spec.feature_set_id}; choose the split with --test-split"
        )
    if len(test) < labelled_test and not spec.allow_missing:
        raise InvalidInputError(
            f"{labelled_test - len(test)} of {labelled_test} labelled {spec.test_split} images of "
            f"{spec.task.dataset!r} have no embedding in {spec.feature_set_id} (failed to decode?): see "
            "`medprobe sql \"SELECT * FROM failures\"`, or pass --allow-missing to score the rest"
        )
    hashes = [data.image_hashes[i] for i in test]
    X = read_features(store, spec.feature_set_id, [layer], hashes)[layer]
    positive = [np.stack([embeddings[t] for t in p]) for p in prompts.positive]
    negative = None if prompts.negative is None else [np.stack([embeddings[t] for t in p]) for p in prompts.negative]
    proba = zeroshot_proba(X, positive, data.kind, logit_scale=logit_scale, logit_bias=logit_bias, negative=negative)
    metrics = metrics_with_ci(data.y[test], proba, data.kind, data.class_names, n_boot=spec.n_boot, seed=spec.seed)
    rule = "softmax" if logit_bias is None else "sigmoid"
    extra = {
        "templates": prompts.source,
        "prompts": dict(zip(data.class_names, prompts.positive, strict=True)),
        **({"negative_prompts": dict(zip(data.class_names, prompts.negative, strict=True))} if prompts.negative
           else {}),
        "logit_scale": logit_scale,
        "logit_bias": logit_bias,
        "probabilities": rule,
        **(record or {}),
    }  # fmt: skip
    outcome = ProbeOutcome(
        new_id("zeroshot"), layer, Setting(1.0, 0), None, "none", {}, None, metrics, None, hashes, data.y[test],
        proba, 0, select_by="-", kind=data.kind, method="zeroshot", solver=rule, extra=extra,
    )  # fmt: skip
    write_outcomes(store, spec, run_id, [outcome], 0.0, ProtocolTiming())
    return outcome
