"""Closed vocabularies, one definition each: values stored in the tables (splits, dtypes, solvers, selection,
layouts) and the choices the CLI offers for them."""

from __future__ import annotations

from enum import StrEnum


class Split(StrEnum):
    """A dataset member's split (``dataset_images.split``)."""

    train = "train"
    val = "val"
    test = "test"


class StorageDType(StrEnum):
    """How activations are stored in a segment (``feature_sets.storage_dtype``)."""

    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"


class ComputeDType(StrEnum):
    """The dtype a model runs in (``feature_sets.compute_dtype``)."""

    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


class SolverName(StrEnum):
    """``--solver``: the batched torch L-BFGS solver, scikit-learn's reference, or cuML."""

    torch = "torch"
    sklearn = "sklearn"
    cuml = "cuml"


class Selection(StrEnum):
    """How C is chosen on training rows: grouped stratified K-fold CV, or the pool's validation split."""

    cv = "cv"
    val = "val"


class CGrid(StrEnum):
    """How much of the C grid selection fits: ``adaptive`` (the default) climbs from the smallest C, each C
    warm-started from the previous one, and stops once the CV score has clearly turned; ``full`` fits every C."""

    full = "full"
    adaptive = "adaptive"


class ImageDecode(StrEnum):
    """Where ``extract`` decodes and preprocesses images: ``auto`` (on the GPU when the model runs on CUDA and
    torchvision can, else PIL), ``pil`` (PIL and the model's processor in the CPU workers), ``torchvision``
    (torchvision's JPEG decoder and the model's transform on the model's device, nvJPEG on CUDA)."""

    auto = "auto"
    pil = "pil"
    torchvision = "torchvision"


class Method(StrEnum):
    """How ``train``/``sweep``/``compare`` classify from features: a logistic-regression probe or weighted kNN."""

    probe = "probe"
    knn = "knn"


class ClassWeight(StrEnum):
    """Class weights of the probe loss, as scikit-learn's ``class_weight`` (``none``: unweighted)."""

    none = "none"
    balanced = "balanced"


class Verify(StrEnum):
    """How hard ingest checks an image: the header only, its structure, or a full decode."""

    header = "header"
    structure = "structure"
    full = "full"


class Layout(StrEnum):
    """``ingest --layout``: the published layout of a source collection."""

    csv = "csv"
    imagefolder = "imagefolder"
    medmnist = "medmnist"
    nct_crc = "nct-crc"
    pannuke = "pannuke"
    isic2018 = "isic2018"
    isic2020 = "isic2020"
    eyepacs = "eyepacs"
    aptos = "aptos"
    airogs = "airogs"
    odir = "odir"
    padchest = "padchest"
    knee = "knee"


class Engine(StrEnum):
    """Where an extraction runs: this process, a Ray cluster, or SLURM job arrays."""

    local = "local"
    ray = "ray"
    slurm = "slurm"


class RowKind(StrEnum):
    """What a ``dataset_images`` row is: an image (keyed by its sha256), or a VQA item registered as a probe row."""

    image = "image"
    vqa_item = "vqa_item"


class SlurmCluster(StrEnum):
    """Which submitit executor runs ``--engine slurm``: a SLURM cluster (sbatch), or this machine (``local``: one
    process per task; ``debug``: in this process), to try the engine without a cluster."""

    slurm = "slurm"
    local = "local"
    debug = "debug"


class VqaLayout(StrEnum):
    """Where VQA items come from: a JSONL/CSV/TSV table, NEJM case folders, or a published benchmark's files."""

    table = "table"
    vqa_rad = "vqa-rad"
    nejm = "nejm"
    slake = "slake"
    pathvqa = "pathvqa"
    pmc_vqa = "pmc-vqa"
    omnimedvqa = "omnimedvqa"
    vqa_med = "vqa-med"


class VqaAnswerType(StrEnum):
    """Which items a VQA run scores: all, multiple choice only (closed) or open-ended only (open)."""

    all = "all"
    closed = "closed"
    open = "open"


class VqaMode(StrEnum):
    """How a VLM's answer is read: option log-likelihoods, letter probabilities, or a parsed generation."""

    loglik = "loglik"
    letter = "letter"
    generate = "generate"


class Quantization(StrEnum):
    """``--quantization``: bitsandbytes 8-bit or 4-bit weights."""

    int8 = "8bit"
    int4 = "4bit"


class NeoplasticShare(StrEnum):
    """PanNuke's "30 % of nuclei": the share of nucleus pixel area, or of the nucleus count."""

    area = "area"
    cells = "count"


class SelectBy(StrEnum):
    """The validation metric that chooses C (``log_loss``: the lowest wins)."""

    macro_auc = "macro_auc"
    macro_f1 = "macro_f1"
    balanced_accuracy = "balanced_accuracy"
    log_loss = "log_loss"


class Calibration(StrEnum):
    """Post-hoc calibration reported beside the raw probabilities: none, or one temperature fitted on the out-of-fold
    training predictions."""

    none = "none"
    temperature = "temperature"


class ComparisonTest(StrEnum):
    """How ``compare`` tests AUC differences: the paired bootstrap alone, or DeLong's test beside it."""

    bootstrap = "bootstrap"
    delong = "delong"


class TestSplit(StrEnum):
    """The split scored once as the test set (``val`` for datasets that ship only train/val)."""

    test = "test"
    val = "val"


SPLITS: tuple[str, ...] = tuple(s.value for s in Split)
STORAGE_DTYPES: tuple[str, ...] = tuple(d.value for d in StorageDType)
COMPUTE_DTYPES: tuple[str, ...] = tuple(d.value for d in ComputeDType)
SOLVERS: tuple[str, ...] = tuple(s.value for s in SolverName)
QUANTIZATIONS: tuple[str, ...] = tuple(q.value for q in Quantization)
