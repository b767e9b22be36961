"""Each published layout read from small files written the way the benchmark releases them."""

from __future__ import annotations

import csv
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medprobe.errors import InvalidInputError
from medprobe.featurestore import FeatureStore
from medprobe.vqa.item_ingest import ingest_items
from medprobe.vqa.items import ReadReport
from medprobe.vqa.sources import detect_layout, read_items


def _image(path: Path, seed: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
    return path.read_bytes()


def _read(source: Path, layout: str | None = None) -> tuple[list, ReadReport]:
    report = ReadReport()
    return list(read_items(source, layout or detect_layout(source), report)), report


def test_slake_english_subset_with_its_categories(tmp_path: Path) -> None:
    root = tmp_path / "Slake1.0"
    _image(root / "imgs" / "xmlab0" / "source.jpg", 0)
    _image(root / "imgs" / "xmlab1" / "source.jpg", 1)
    base = {"img_id": 0, "img_name": "xmlab0/source.jpg", "location": "Abdomen", "modality": "MRI",
            "base_type": "vqa", "triple": ["vhead", "_", "_"]}  # fmt: skip
    test = [
        {**base, "qid": 9, "question": "What modality is used to take this image?", "answer": "MRI", "q_lang": "en",
         "answer_type": "OPEN", "content_type": "Modality"},
        {**base, "qid": 10, "question": "Does the picture contain liver?", "answer": "Yes", "q_lang": "en",
         "answer_type": "CLOSED", "content_type": "Organ"},
        {**base, "qid": 11, "question": "Is this a T1 or a T2 image?", "answer": "T2", "q_lang": "en",
         "answer_type": "CLOSED", "content_type": "Modality"},
        {**base, "qid": 12, "question": "图中有肝脏吗?", "answer": "是", "q_lang": "zh", "answer_type": "CLOSED",
         "content_type": "Organ"},
    ]  # fmt: skip
    train = [{**base, "img_name": "xmlab1/source.jpg", "qid": 1, "question": "Where is the abnormality?",
              "answer": "Left Lung", "q_lang": "en", "answer_type": "OPEN", "content_type": "Position"}]  # fmt: skip
    (root / "test.json").write_text(json.dumps(test, ensure_ascii=False))
    (root / "train.json").write_text(json.dumps(train))
    (root / "validate.json").write_text("[]")
    assert detect_layout(root) == "slake"
    items, report = _read(root)
    by_id = {i.item_id: i for i in items}
    assert set(by_id) == {"9", "10", "11", "1"} and report.skipped == {"not English (q_lang zh)": 1}
    assert by_id["9"].options == {} and by_id["9"].answer == "MRI" and by_id["9"].split == "test"
    assert by_id["10"].options == {"A": "yes", "B": "no"} and by_id["10"].answer == "A"
    assert by_id["11"].options == {"A": "T1", "B": "T2"} and by_id["11"].answer == "B"
    assert by_id["1"].split == "train" and by_id["1"].images == [root / "imgs" / "xmlab1" / "source.jpg"]
    assert by_id["9"].categories == {"answer_type": "OPEN", "content_type": "Modality", "modality": "MRI",
                                     "location": "Abdomen"}  # fmt: skip
    assert by_id["9"].group_id == by_id["10"].group_id == "xmlab0/source.jpg"
    test[0]["answer"] = ""
    (root / "test.json").write_text(json.dumps(test, ensure_ascii=False))
    with pytest.raises(InvalidInputError, match=r"test\.json record 1 \(qid 9\): no answer; fix or remove"):
        _read(root)


def test_pathvqa_pickles_and_parquet(tmp_path: Path) -> None:
    root = tmp_path / "pvqa"
    for split in ("train", "test"):
        _image(root / "images" / split / f"{split}_0001.jpg", 3)
        records = [{"image": f"{split}_0001", "question": "What have lost their nuclei?", "answer": "neutrophils"},
                   {"image": f"{split}_0001", "question": "Is this granulation tissue?", "answer": "yes"}]
        (root / "qas" / split).mkdir(parents=True)
        (root / "qas" / split / f"{split}_qa.pkl").write_bytes(pickle.dumps(records))
    assert detect_layout(root) == "pathvqa"
    items, _ = _read(root)
    assert [(i.item_id, i.split) for i in items] == [("test:0", "test"), ("test:1", "test"), ("train:0", "train"),
                                                      ("train:1", "train")]  # fmt: skip
    assert items[0].options == {} and items[0].answer == "neutrophils"
    assert items[0].categories == {"answer_type": "open"}
    assert items[1].options == {"A": "yes", "B": "no"} and items[1].categories == {"answer_type": "yes/no"}
    assert items[0].images == [root / "images" / "test" / "test_0001.jpg"]
    # a pickle that names a class is refused, never run
    (root / "qas" / "test" / "test_qa.pkl").write_bytes(pickle.dumps([{"image": "x", "question": "q",
                                                                       "answer": io.BytesIO()}]))  # fmt: skip
    with pytest.raises(InvalidInputError, match="the pickle names"):
        _read(root)
    # the Parquet export: images embedded as bytes
    hf = tmp_path / "path-vqa" / "data"
    hf.mkdir(parents=True)
    data = _image(tmp_path / "x.jpg", 4)
    table = pa.table({"image": [{"bytes": data, "path": None}] * 2, "question": ["Where?", "Is it benign?"],
                      "answer": ["liver", "no"]})  # fmt: skip
    pq.write_table(table, hf / "validation-00000-of-00001.parquet")
    items, _ = _read(tmp_path / "path-vqa")
    assert [(i.item_id, i.split) for i in items] == [("val:0", "val"), ("val:1", "val")]
    assert all(i.images == [data] for i in items)
    assert items[1].answer == "B"


def test_pmc_vqa_csv(tmp_path: Path) -> None:
    root = tmp_path / "PMC-VQA"
    _image(root / "images" / "PMC1064097_F1.jpg", 5)
    path = root / "test_clean.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D",
                    "Answer_label"])  # fmt: skip
        w.writerow(["PMC1064097_F1.jpg", "What imaging technique was used?", "CT", " A:MRI ", " B:CT ", " C:PET ",
                    " D:X-ray ", "B"])  # fmt: skip
    assert detect_layout(path) == "pmc-vqa"
    (item,), _ = _read(path)
    assert item.options == {"A": "MRI", "B": "CT", "C": "PET", "D": "X-ray"} and item.answer == "B"
    assert item.item_id == "test_clean:1" and item.split == "test" and item.images == [root / "images" /
                                                                                      "PMC1064097_F1.jpg"]  # fmt: skip
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow(["PMC1.jpg", "Q?", "", "A:x", "B:y", "", "", ""])
    with pytest.raises(InvalidInputError, match=r"test_clean\.csv row 3: no Answer_label"):
        _read(path)


def test_omnimedvqa_with_its_sub_datasets(tmp_path: Path) -> None:
    root = tmp_path / "OmniMedVQA"
    _image(root / "Images" / "ACRIMA" / "Im553_g_ACRIMA.png", 6)
    _image(root / "Images" / "Chest CT Scan" / "0001.png", 7)
    qa = root / "QA_information" / "Open-access"
    qa.mkdir(parents=True)
    (qa / "ACRIMA.json").write_text(json.dumps([{
        "dataset": "ACRIMA", "question_id": "ACRIMA_0000", "question_type": "Disease Diagnosis",
        "question": "What is the diagnosis?", "gt_answer": "Glaucoma", "image_path": "Images/ACRIMA/Im553_g_ACRIMA.png",
        "option_A": "Normal", "option_B": "Glaucoma", "modality_type": "Fundus Photography"}]))  # fmt: skip
    (qa / "Chest CT Scan.json").write_text(json.dumps([{
        "dataset": "Chest CT Scan", "question_id": "Chest CT Scan_0000", "question_type": "Modality Recognition",
        "question": "What modality?", "gt_answer": "CT", "image_path": "Images/Chest CT Scan/0001.png",
        "option_A": "MR", "option_B": "CT", "option_C": "X-ray", "option_D": "PET",
        "modality": "CT(Computed Tomography)",
    }]))  # fmt: skip
    assert detect_layout(root) == "omnimedvqa"
    items, _ = _read(root)
    first, second = items
    assert first.item_id == "ACRIMA_0000" and first.answer == "B" and first.options == {"A": "Normal", "B": "Glaucoma"}
    assert first.categories == {"question_type": "Disease Diagnosis", "modality_type": "Fundus Photography",
                                "dataset": "ACRIMA", "access": "Open-access"}  # fmt: skip
    assert second.categories["modality_type"] == "CT(Computed Tomography)" and second.answer == "B"
    assert second.images == [root / "Images" / "Chest CT Scan" / "0001.png"] and second.split == "test"


def test_vqa_med_qa_pairs(store: FeatureStore, tmp_path: Path) -> None:
    root = tmp_path / "ImageClef-2019-VQA-Med-Training"
    _image(root / "Train_images" / "synpic41148.jpg", 8)
    _image(root / "Train_images" / "synpic41149.jpg", 9)
    by_category = root / "QAPairsByCategory"
    by_category.mkdir(parents=True)
    (by_category / "C1_Modality_train.txt").write_text("synpic41148|which plane is the image?|axial\n"
                                                       "synpic41149|is this a t1 weighted image?|yes\n")  # fmt: skip
    (by_category / "C2_Plane_train.txt").write_text("synpic41148|in what plane was this image taken?|sagittal\n")
    (root / "All_QA_Pairs_train.txt").write_text("synpic41148|which plane is the image?|axial\n")
    assert detect_layout(by_category) == "vqa-med"
    items, _ = _read(by_category)
    assert [(i.item_id, i.categories.get("category"), i.split) for i in items] == [
        ("C1_Modality_train:1", "Modality", "train"), ("C1_Modality_train:2", "Modality", "train"),
        ("C2_Plane_train:1", "Plane", "train")]  # fmt: skip
    assert items[0].options == {} and items[0].answer == "axial" and items[1].options == {"A": "yes", "B": "no"}
    assert items[0].images == [root / "Train_images" / "synpic41148.jpg"]
    test = tmp_path / "VQAMed2019Test"
    _image(test / "VQAMed2019_Test_Images" / "synpic54082.jpg", 10)
    (test / "VQAMed2019_Test_Questions_w_Ref_Answers.txt").write_text(
        "synpic54082|modality|what kind of scan is this?|mr - flair\nsynpic99999|plane|which plane?|axial\n")
    summary = ingest_items(store, test / "VQAMed2019_Test_Questions_w_Ref_Answers.txt", "vqamed")
    assert summary.layout == "vqa-med" and summary.items_new == 1 and summary.failures == 1  # synpic99999 is absent
    row = store.sql("SELECT * FROM vqa_items WHERE item_set = 'vqamed'").to_pylist()[0]
    assert row["answer"] == "mr - flair" and json.loads(row["categories"]) == {"category": "modality"}
    assert row["options"] == "{}" and row["split"] == "test"
    (test / "bad.txt").write_text("synpic54082|what kind of scan is this?\n")
    with pytest.raises(InvalidInputError, match=r"bad\.txt line 1: expected image\|question\|answer"):
        _read(test / "bad.txt")
