"""`medprobe predict`: a stored probe applied unchanged to its own test rows (the stored probabilities, exactly),
to a dataset ingested later (metrics with CIs, images still to extract counted), and refused where it cannot apply."""

from __future__ import annotations

import json

import numpy as np
import pytest

import medprobe
from medprobe.errors import InvalidInputError, NotFoundError, StoreWarning
from medprobe.featurestore import FeatureStore
from medprobe.schemas import DatasetImageRow, DatasetRow, TaskRow
from tests.helpers.cli import run_cli


def _train(store: FeatureStore):
    return medprobe.train(task="grade", feature_set="fs-synth", layers="2", cv=3, c_grid="0.1,1", n_boot=50,
                          no_progress=True, store=store)  # fmt: skip


def _add_dataset(store: FeatureStore, name: str, hashes: list[str], labels: list[str | None], classes: list[str],
                 ) -> None:  # fmt: skip
    store.append("datasets", [DatasetRow(dataset=name, format="csv", source=name, split_policy="shipped")])
    store.append("tasks", [TaskRow(dataset=name, task="grade", type="multiclass", label_columns=["grade"],
                                   class_names=classes, primary_metric="macro_auc")])  # fmt: skip
    store.append("dataset_images", [
        DatasetImageRow(dataset=name, image_hash=h, split="test", source_path=f"{i}.png",
                        labels=json.dumps({} if y is None else {"grade": y}))
        for i, (h, y) in enumerate(zip(hashes, labels, strict=True))
    ])  # fmt: skip


def test_predict_on_the_training_runs_own_test_rows_gives_its_stored_probabilities(synth_store) -> None:
    run = _train(synth_store)
    result = medprobe.predict(probe=run.probe_id, dataset="synth", split="test", n_boot=50, store=synth_store)
    stored = synth_store.sql("SELECT image_hash, probabilities FROM predictions WHERE probe_id = ? ORDER BY "
                             "image_hash", [run.probe_id]).to_pylist()  # fmt: skip
    again = synth_store.sql("SELECT image_hash, probabilities FROM predictions WHERE probe_id = ? ORDER BY "
                            "image_hash", [result.probe_id]).to_pylist()  # fmt: skip
    assert [r["image_hash"] for r in again] == [r["image_hash"] for r in stored]
    np.testing.assert_array_equal(np.array([r["probabilities"] for r in again], dtype=np.float32),
                                  np.array([r["probabilities"] for r in stored], dtype=np.float32))  # fmt: skip
    assert result.metrics["macro_auc"] == run.test["macro_auc"]  # same rows, same replicates: the same CI
    # the stored probe's operating points, at the thresholds chosen when it was fitted
    assert result.metrics["operating_points"] == run.test["operating_points"]
    row = synth_store.sql("SELECT applied_from, dataset, c FROM probe_results WHERE probe_id = ?",
                          [result.probe_id]).to_pylist()[0]  # fmt: skip
    assert row == {"applied_from": run.probe_id, "dataset": "synth", "c": run.C}


def test_predict_on_a_dataset_ingested_later(synth_store, capsys) -> None:
    run = _train(synth_store)
    hashes = synth_store.sql("SELECT image_hash, labels FROM dataset_images WHERE split = 'test' ORDER BY "
                             "image_hash").to_pylist()  # fmt: skip
    names = ["none", "mild", "severe"]
    later = [r["image_hash"] for r in hashes[:30]] + ["f" * 64, "e" * 64]  # two images not extracted yet
    labels = [names[json.loads(r["labels"])["grade"]] if isinstance(json.loads(r["labels"])["grade"], int)
              else json.loads(r["labels"])["grade"] for r in hashes[:30]] + ["mild", None]  # fmt: skip
    labels[0] = None  # an image without a label: predicted, not scored
    _add_dataset(synth_store, "site2", later, labels, names)
    with pytest.warns(StoreWarning, match=r"2 of 32 images of 'site2' have no features"):
        result = medprobe.predict(probe=run.probe_id, dataset="site2", n_boot=50, store=synth_store)
    assert (result.n_members, result.n_predicted, result.n_missing_features, result.n_labelled) == (32, 30, 2, 29)
    assert result.metrics["n_test"] == 29 and result.metrics["macro_auc"]["ci_low"] is not None
    # the same numbers from the stored probe and scikit-learn's metric on the stored features
    from sklearn.metrics import roc_auc_score

    probe = medprobe.load_probe(run.probe_id, store=synth_store)
    scored = [h for h, y in zip(later[:30], labels[:30], strict=True) if y is not None]
    truth = [names.index(y) for y in labels[1:30]]
    proba = probe.predict_proba(synth_store.read("fs-synth", 2, scored))
    expected = roc_auc_score(truth, proba, multi_class="ovr", average="macro")
    assert result.metrics["macro_auc"]["value"] == pytest.approx(expected, abs=1e-12)
    code, out, err = run_cli(capsys, "predict", "--probe", run.probe_id, "-d", "site2", "-f", "csv", "-s",
                             synth_store.url)  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0] == "image_hash,p_none,p_mild,p_severe" and len(out.splitlines()) == 31


def test_predict_refuses_what_it_cannot_apply(synth_store, capsys) -> None:
    run = _train(synth_store)
    with pytest.raises(NotFoundError, match="no probe 'probe-nope'"):
        medprobe.predict(probe="probe-nope", dataset="synth", store=synth_store)
    first = synth_store.sql("SELECT image_hash FROM dataset_images LIMIT 3").column(0).to_pylist()
    _add_dataset(synth_store, "other-classes", first, ["a", "b", "a"], ["a", "b"])
    with pytest.raises(InvalidInputError, match=r"classes \['a', 'b'\].*trained on \['none', 'mild', 'severe'\]"):
        medprobe.predict(probe=run.probe_id, dataset="other-classes", store=synth_store)
    _add_dataset(synth_store, "unextracted", ["d" * 64], ["mild"], ["none", "mild", "severe"])
    code, _, err = run_cli(capsys, "predict", "--probe", run.probe_id, "-d", "unextracted", "-s", synth_store.url)
    assert code == 3 and "run `medprobe extract -d unextracted -m synthetic/model`" in err
    code, _, err = run_cli(capsys, "predict", "--probe", run.probe_id, "-d", "nope", "-s", synth_store.url)
    assert code == 3 and "dataset 'nope' has no images" in err


def test_predict_scores_subgroups_with_the_probes_own_bins(synth_store) -> None:
    from tests.trainer.test_subgroups import _add_metadata

    _add_metadata(synth_store)
    run = medprobe.train(task="grade", feature_set="fs-synth", layers="3", cv=3, c_grid="0.1,1", n_boot=50,
                         subgroup="sex,age:3", no_progress=True, store=synth_store)  # fmt: skip
    again = medprobe.predict(probe=run.probe_id, dataset="synth", split="test", subgroup="sex,age:3", n_boot=50,
                             store=synth_store)  # fmt: skip
    assert again.metrics["subgroups"] == run.test["subgroups"]  # the same rows, the probe's age bins, the same CIs
    with pytest.raises(InvalidInputError, match="no such metadata column"):
        medprobe.predict(probe=run.probe_id, dataset="synth", split="test", subgroup="weight", store=synth_store)
