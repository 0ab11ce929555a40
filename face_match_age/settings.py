"""The one configuration of face-match-age, shared by every script, the installed package and its command.
This is where every default is defined; the repository's root `config.py` re-exports these names (`from config
import Config` keeps working in the scripts) and `python config.py` lists every default with its reason.

`Config` holds every path and setting. Each field is declared with `setting(default, why, group=...)`: the
reason is the field's one-line comment and also its `--help` text, the group its `--help` heading; a field that
changes a result says which (`changes=`, keys of RESULT_KINDS), and every store that is resumed or reused
records the fields `settings_that_change` names for its kinds, and no list of its own. The command lines are
built from these declarations by face_match_age.command_line (jsonargparse); a run stores its resolved config
beside what it produces with `save_config`, which `--config` reads back.

Importing this module has no side effects: no folders are made, no devices probed, nothing printed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from face_match_age.files.output_files import write_atomically

MIN_AGE = 0  # youngest age the model can predict
MAX_AGE = 100  # oldest age; with MIN_AGE it gives 101 one-year bins
NUM_AGE_BINS = MAX_AGE - MIN_AGE + 1

PRETRAINED_CHOICES = ("vggface2", "casia-webface", "none")
FACE_SELECTION_CHOICES = ("largest", "probability", "center")
# --precision, one value set in every script: 32 is float32; bf16 and 16 are bfloat16 and float16 (autocast at
# inference, Lightning's mixed precision in training). Lightning's own spellings are accepted for the same values.
PRECISION_CHOICES = ("auto", "32", "bf16", "16")
INFERENCE_PRECISION_CHOICES = PRECISION_CHOICES  # the same set: inference_precision is --precision of infer.py
LightningPrecision = Literal["32-true", "bf16-mixed", "16-mixed"]  # the values of Trainer(precision=) used here
LIGHTNING_PRECISION: dict[str, LightningPrecision] = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}
PRECISION_ALIASES: dict[str, str] = {long: short for short, long in LIGHTNING_PRECISION.items()}
DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N (one GPU by index) or mps"  # every script's --device
# The headings of every script's --help, in this order: key -> title. A script shows the ones it uses.
OPTION_GROUPS = {
    "data": "data",
    "model": "model",
    "detection": "face detection",
    "training": "training",
    "hardware": "hardware",
    "output": "output",
    "benchmark": "benchmark",
}
# Keys that scripts save beside the config fields in config.json (save_config's `extra`): --config skips them.
RUN_RECORD_KEYS = frozenset(
    {"script", "dataset", "limit", "detect", "pairs", "folder", "no_age", "tta", "all_faces", "calibration"}
)
# What a setting can change, for the files that are resumed or reused rather than redone: each such store records
# the settings of the kinds it depends on (settings_that_change) and refuses, or redoes, what was made with others.
# A Config field declares the kinds it changes with setting(..., changes=...): the one list of them.
RESULT_KINDS = {
    "faces": "the faces found in a photo, their crops, embeddings and ages: infer.py's batch rows (batch.json) "
    "and --folder's embedding store (embeddings/settings.json)",
    "verdicts": "a pair's verdict: infer.py's batch rows (batch.json); --folder redoes its search at every run",
    "crops": "the face crops and the split data_prep.py writes (its summary.json fingerprint)",
    "training": "the run train.py resumes from a checkpoint, which refuses other values",
}


@dataclass(frozen=True)
class ArchiveSource:
    """Where a public dataset comes from; `md5` is checked after download when known."""

    file_name: str
    url: str | None  # None: no stable direct link; the user passes --archive or --url
    md5: str | None
    out_name: str  # folder under data/ that data_prep.py writes
    inner: str  # folder inside the archive that holds the photos (and IMDB-WIKI's .mat)
    page: str  # where a person finds the terms and a download


_IMDB_WIKI = "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/static/"
DATASET_SOURCES = {
    # MD5s for IMDB-WIKI are published by third parties (unverified); --skip-checksum accepts a mismatch.
    "imdb": ArchiveSource(
        "imdb_crop.tar",
        _IMDB_WIKI + "imdb_crop.tar",
        "44b7548f288c14397cb7a7bab35ebe14",
        "IMDB",
        "imdb_crop",
        "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/",
    ),
    "wiki": ArchiveSource(
        "wiki_crop.tar",
        _IMDB_WIKI + "wiki_crop.tar",
        "f536eb7f5eae229ae8f286184364b42b",
        "WIKI",
        "wiki_crop",
        "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/",
    ),
    "cacd": ArchiveSource("CACD2000.tar.gz", None, None, "CACD", "CACD2000", "http://bcsiriuschen.github.io/CARC/"),
    "utkface": ArchiveSource("UTKFace.tar.gz", None, None, "UTKFace", "UTKFace", "https://susanqq.github.io/UTKFace/"),
    "fgnet": ArchiveSource(
        "FGNET.zip", None, None, "FGNET", "FGNET/images", "the FG-NET ageing database (research use)"
    ),
}


def precision_value(text: str) -> str:
    """--precision's value in the one vocabulary: auto, 32, bf16 or 16; Lightning's 32-true, bf16-mixed and
    16-mixed are the same values. Anything else is returned as given, for `choices` to refuse."""
    text = str(text).strip()
    return PRECISION_ALIASES.get(text, text)


def device_value(text: str) -> str:
    """--device's value, checked without torch: auto, cpu, mps, cuda or cuda:N. Whether this machine has it is
    face_match_age.device's question, asked once the command line is read."""
    text = str(text).strip()
    kind, _, index = text.partition(":")
    if text in ("auto", "cpu", "mps", "cuda") or (kind == "cuda" and index.isdigit()):
        return text
    raise ValueError(f"device must be auto, cpu, cuda, cuda:N (a GPU index) or mps; got {text!r}")


def setting(
    default: Any,
    why: str,
    *,
    group: str,
    aliases: tuple[str, ...] = (),
    choices: tuple = (),
    changes: tuple[str, ...] = (),
    parse: typing.Callable[[str], Any] | None = None,
    hidden_aliases: tuple[str, ...] = (),
) -> Any:
    """Declare a config field with its reason (its --help text), its --help heading (a key of OPTION_GROUPS),
    CLI aliases, allowed values and the kinds of result it changes (keys of RESULT_KINDS: the stores that
    record it, see settings_that_change). `parse`: what turns the option's text into the value (default: the
    field's type); `hidden_aliases`: old option names still accepted but not shown in --help."""
    if group not in OPTION_GROUPS:
        raise ValueError(f"unknown option group {group!r}; use one of {', '.join(OPTION_GROUPS)}")
    unknown = [kind for kind in changes if kind not in RESULT_KINDS]
    if unknown:
        raise ValueError(f"unknown result kind {unknown[0]!r}; use one of {', '.join(RESULT_KINDS)}")
    metadata = {
        "why": why,
        "group": group,
        "aliases": aliases,
        "choices": choices,
        "changes": frozenset(changes),
        "parse": parse,
        "hidden_aliases": hidden_aliases,
    }
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


def _default_num_workers() -> int:
    return min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class Config:
    # --- data (written by data_prep.py, read by train.py) ---
    dataset_dir: Path | None = setting(
        None,
        "a folder data_prep.py prepared (its --out): sets train_dir, val_dir, train_csv and val_csv to "
        "DIR/train_images, DIR/val_images, DIR/train.csv and DIR/val.csv; one of those options after it replaces "
        "that path",
        aliases=("--data-dir",),
        group="data",
    )
    train_dir: Path = setting(Path("data/IMDB/train_images"), "160x160 training face crops", group="data")
    val_dir: Path = setting(Path("data/IMDB/val_images"), "160x160 validation face crops", group="data")
    train_csv: Path = setting(
        Path("data/IMDB/train.csv"), "training labels: columns name, age (identity optional)", group="data"
    )
    val_csv: Path = setting(Path("data/IMDB/val.csv"), "validation labels, same columns as train_csv", group="data")
    val_ratio: float = setting(
        0.2, "share of identities held out for validation (80/20 split)", changes=("crops",), group="data"
    )
    data_root: Path = setting(
        Path("data"), "where data_prep.py keeps downloads, unpacked archives and prepared sets", group="data"
    )
    min_face_score: float = setting(
        1.0, "IMDB-WIKI face_score below this is usually not a clean single face", changes=("crops",), group="data"
    )
    min_image_side: int = setting(
        48, "smaller source images are placeholders or too blurry to age", changes=("crops",), group="data"
    )
    img_size: int = setting(
        160,
        "input side of InceptionResnetV1 as trained on VGGFace2; changing it needs retraining",
        changes=("faces", "crops", "training"),
        group="data",
    )

    # --- model ---
    pretrained: str = setting(
        "vggface2",
        "backbone weights; VGGFace2 faces carry the most age variety",
        choices=PRETRAINED_CHOICES,
        group="model",
    )
    head_hidden_dim: int = setting(
        256, "width of the age head between the 512-d embedding and the 101 bins", changes=("training",), group="model"
    )
    head_dropout: float = setting(
        0.2, "dropout before the age head; the backbone already generalises well", changes=("training",), group="model"
    )
    label_sigma: float = setting(
        2.0,
        "std (years) of the Gaussian label distribution: neighbouring ages look alike",
        aliases=("--sigma",),
        changes=("training",),
        group="model",
    )
    freeze_backbone_epochs: int = setting(
        0,
        "epochs with a frozen backbone before fine-tuning it (-1: never unfreeze)",
        changes=("training",),
        group="training",
    )

    # --- training ---
    batch_size: int = setting(
        256, "fits a 24 GB GPU at 160x160 in mixed precision; lower it if memory runs out", group="training"
    )
    num_workers: int = setting(
        _default_num_workers, "data-loading processes; more than the CPU cores only thrashes", group="hardware"
    )
    learning_rate: float = setting(
        1e-4,
        "Adam step size small enough not to wreck the pretrained backbone",
        aliases=("--lr",),
        changes=("training",),
        group="training",
    )
    head_learning_rate: float = setting(
        1e-3,
        "Adam step size of the new age head, which starts from nothing and may move faster than the backbone "
        "(docs/training.md, measured)",
        aliases=("--head-lr",),
        changes=("training",),
        group="training",
    )
    warmup_steps: int = setting(
        0, "steps over which every learning rate rises linearly from 0 (0: none)", group="training"
    )
    lr_schedule: str = setting(
        "constant",
        "after the warm-up, constant or a half cosine falling to 0 at the last step of max_epochs",
        choices=("constant", "cosine"),
        group="training",
    )
    max_epochs: int = setting(50, "upper bound; early stopping usually ends training sooner", group="training")
    patience: int = setting(6, "epochs without a better validation MAE before early stopping", group="training")
    seed: int = setting(
        42, "seeds Python, NumPy and torch so runs can be repeated", changes=("crops",), group="training"
    )
    precision: str = setting(
        "auto",
        "number format of training: 32 (float32), bf16 or 16 (mixed precision); auto: bf16 on CUDA GPUs that "
        "support it, 16 on older ones, 32 elsewhere (Lightning's 32-true, bf16-mixed, 16-mixed are accepted too)",
        choices=PRECISION_CHOICES,
        parse=precision_value,
        group="hardware",
    )
    device: str = setting(
        "auto",
        "where the networks run: " + DEVICE_HELP,
        parse=device_value,
        hidden_aliases=("--accelerator",),
        group="hardware",
    )
    devices: str = setting(
        "auto",
        "processes per machine, one per GPU (or CPU processes): a count; GPU indices like 0,1 (train.py only); "
        "or auto: every GPU, 1 on CPU",
        group="hardware",
    )
    num_nodes: int = setting(1, "machines taking part in distributed (DDP) training", group="hardware")
    strategy: str = setting(
        "auto", "Lightning strategy; auto is DDP when more than one device is used", group="hardware"
    )
    limit_train_batches: str = setting(
        "1.0", "share (0-1.0) or count (an integer) of training batches per epoch, for quick runs", group="training"
    )
    limit_val_batches: str = setting(
        "1.0", "share (0-1.0) or count (an integer) of validation batches per epoch", group="training"
    )
    log_every_n_steps: int = setting(
        50, "training steps between logged points; lower for tiny datasets", group="output"
    )
    logged_sample_faces: int = setting(
        16, "validation faces drawn into the TensorBoard grid each epoch", group="output"
    )
    figure_sample_size: int = setting(
        512, "most validation faces behind the predicted-vs-true figure; bounds its cost", group="output"
    )
    resume_checkpoint: Path | None = setting(
        None,
        "a training checkpoint (last.ckpt) to resume from: weights, optimizer, epoch and callbacks (--ckpt, in "
        "infer.py and evaluate.py, is the model to use)",
        aliases=("--resume",),
        group="training",
    )
    checkpoint_dir: Path = setting(
        Path("checkpoints"), "where best.ckpt and last.ckpt are written", aliases=("--ckpt-dir",), group="output"
    )
    checkpoint_every_n_steps: int = setting(
        500,
        "training steps between in-epoch saves of last.ckpt, which bound "
        "what a crash loses (an IMDB epoch at batch 256 is ~1,800); 0: epoch ends only",
        group="output",
    )
    log_dir: Path = setting(
        Path("logs/face_age_det"), "TensorBoard folder: tensorboard --logdir logs/face_age_det", group="output"
    )

    # --- inference ---
    best_checkpoint: Path = setting(
        Path("checkpoints/best.ckpt"), "age model that inference loads by default", aliases=("--ckpt",), group="model"
    )
    verification_threshold: float = setting(
        0.7,
        "cosine similarity above which two faces count as one person",
        aliases=("--threshold",),
        changes=("verdicts",),
        group="model",
    )
    mtcnn_margin: int = setting(
        14,
        "pixels of context kept around the detected box, as facenet-pytorch's finetuning example",
        changes=("faces", "crops"),
        group="detection",
    )
    mtcnn_min_face_size: int = setting(
        20,
        "smallest face (pixels) MTCNN looks for; smaller ones are too blurry to age",
        changes=("faces", "crops"),
        group="detection",
    )
    detection_max_side: int = setting(
        1600,
        "photos larger than this (pixels) are shrunk for detection only; crops come from the original",
        changes=("faces", "crops"),
        group="detection",
    )
    inference_batch_size: int = setting(
        64, "faces per forward pass at inference; fits any GPU and keeps CPU memory low", group="hardware"
    )
    inference_precision: str = setting(
        "auto",
        "number format of the two networks at inference (MTCNN stays float32): auto is bf16 on CUDA GPUs that "
        "support it, 16 on older ones, 32 elsewhere; bf16 on CPU needs native bfloat16 (AVX-512 BF16 or AMX)",
        choices=INFERENCE_PRECISION_CHOICES,
        parse=precision_value,
        aliases=("--precision",),
        changes=("faces",),
        group="hardware",
    )
    channels_last: bool = setting(
        True,
        "run both networks in channels-last memory format: faster on this project's CPUs, same decisions "
        "(docs/inference.md)",
        changes=("faces",),
        group="hardware",
    )
    compile_networks: bool = setting(
        False,
        "torch.compile both networks: the first batch waits for the compiler (a minute or more on CPU), "
        "so it pays only on long batch runs",
        aliases=("--compile",),
        changes=("faces",),
        group="hardware",
    )
    face_selection: str = setting(
        "largest",
        "which face to use when a photo holds several: the subject is usually the biggest",
        choices=FACE_SELECTION_CHOICES,
        aliases=("--face",),
        changes=("faces", "crops"),
        group="detection",
    )

    def __post_init__(self) -> None:
        # Lightning's spellings of a precision (bf16-mixed) are the same values as ours (bf16): stored as ours,
        # so that a config.json of an older run, or Config(precision="bf16-mixed"), means the same.
        for name in ("precision", "inference_precision"):
            object.__setattr__(self, name, PRECISION_ALIASES.get(getattr(self, name), getattr(self, name)))
        problems = list(_validation_problems(self))
        if problems:
            raise ValueError("invalid configuration: " + "; ".join(problems))

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` applied; unknown names raise a ValueError that suggests close names."""
        unknown = [name for name in changes if name not in field_names()]
        if unknown:
            raise ValueError(unknown_names_message(unknown))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (paths as strings)."""
        return {
            name: str(value) if isinstance(value, Path) else value for name, value in dataclasses.asdict(self).items()
        }


def _validation_problems(config: Config):
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        value = getattr(config, f.name)
        if choices and value not in choices:
            yield f"{f.name}={value!r} is not one of {', '.join(choices)}"
    positive = ("img_size", "batch_size", "max_epochs", "head_hidden_dim", "detection_max_side", "inference_batch_size")
    for name in positive:
        if getattr(config, name) <= 0:
            yield f"{name} must be positive, got {getattr(config, name)}"
    if not 0 < config.val_ratio < 1:
        yield f"val_ratio must lie strictly between 0 and 1, got {config.val_ratio}"
    if config.learning_rate <= 0 or config.head_learning_rate <= 0 or config.warmup_steps < 0:
        yield "learning_rate and head_learning_rate must be positive, warmup_steps not negative"
    if config.label_sigma <= 0:
        yield f"label_sigma must be positive, got {config.label_sigma}"
    if not 0 <= config.head_dropout < 1:
        yield f"head_dropout must lie in [0, 1), got {config.head_dropout}"
    if not -1 <= config.verification_threshold <= 1:
        threshold = config.verification_threshold
        yield f"verification_threshold is a cosine similarity and must lie in [-1, 1], got {threshold}"
    # MTCNN's first network looks at 12-pixel windows: a smaller minimum enlarges the whole photo (1 would make it
    # 12 times wider and taller; 0 divides by zero). A minimum over half the detection size finds faces only in
    # close-ups that fill a large photo, and none in any dataset's photos: such a value is a slip, not a choice.
    largest = config.detection_max_side // 2
    if not 12 <= config.mtcnn_min_face_size <= largest:
        yield (
            f"mtcnn_min_face_size must lie in 12..{largest} pixels (12: MTCNN's smallest window; {largest}: half "
            f"of detection_max_side), got {config.mtcnn_min_face_size}"
        )
    if config.num_workers < 0 or config.patience < 0 or config.mtcnn_margin < 0:
        yield "num_workers, patience and mtcnn_margin cannot be negative"
    for name in ("limit_train_batches", "limit_val_batches"):
        try:
            limit = batch_limit(getattr(config, name))
        except ValueError:
            limit = -1
        if limit < 0 or (isinstance(limit, float) and limit > 1.0):
            given = getattr(config, name)
            yield f"{name} must be a share between 0 and 1.0 or a whole number of batches, got {given!r}"
    for check in (lambda: devices_value(config.devices), lambda: device_value(config.device)):
        try:
            check()
        except ValueError as error:
            yield str(error)
    if config.num_nodes < 1 or config.log_every_n_steps < 1:
        yield "num_nodes and log_every_n_steps must be at least 1"
    if config.freeze_backbone_epochs < -1:
        yield f"freeze_backbone_epochs must be -1 (always frozen) or more, got {config.freeze_backbone_epochs}"


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(Config))


def settings_that_change(*kinds: str) -> tuple[str, ...]:
    """The Config fields that change a result of any of `kinds` (keys of RESULT_KINDS), in declaration order:
    what a store of such results records, and refuses (or redoes) when a run asks for other values. The one
    place this is decided is each field's `changes=` declaration."""
    unknown = [kind for kind in kinds if kind not in RESULT_KINDS]
    if unknown:
        raise ValueError(f"unknown result kind {unknown[0]!r}; use one of {', '.join(RESULT_KINDS)}")
    return tuple(f.name for f in dataclasses.fields(Config) if f.metadata["changes"] & set(kinds))


def settings_table() -> str:
    """Every setting under its --help heading: `name = default`, its reason and the results it changes (what
    `python config.py` prints)."""
    defaults = Config()
    lines: list[str | None] = []  # None: no blank line before the first heading
    for key, title in OPTION_GROUPS.items():
        fields = [f for f in dataclasses.fields(Config) if f.metadata["group"] == key]
        if fields:
            lines += ["" if lines else None, f"# {title}"]
            for f in fields:
                value = getattr(defaults, f.name)
                shown = repr(str(value)) if isinstance(value, Path) else repr(value)
                changes = f.metadata["changes"]
                kinds = f" [changes {', '.join(k for k in RESULT_KINDS if k in changes)}]" if changes else ""
                lines.append(f"{f.name} = {shown}  # {f.metadata['why']}{kinds}")
    return "\n".join(line for line in lines if line is not None)


def unknown_names_message(unknown: list[str]) -> str:
    return f"unknown config field {_with_suggestions(unknown)}; known fields: {', '.join(field_names())}"


def _with_suggestions(unknown: list[str]) -> str:
    """'batchsize' (did you mean 'batch_size'?), ... for names that are not config fields."""
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, field_names(), n=1)
        parts.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return ", ".join(parts)


def batch_limit(text: str) -> int | float:
    """Lightning's limit_*_batches from its text form: '0.25' is a share, '3' a count of batches."""
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def devices_value(text: str) -> int | list[int] | str:
    """`devices` (--devices) as Lightning's Trainer takes it: "auto", a count ("2") or GPU indices ("0,1" ->
    [0, 1]). The one parser of --devices: train.py passes its value on, infer.py turns it into a count of
    processes (face_match_age.device.batch_process_count)."""
    text = str(text).strip()  # str(): a hand-written config.json may hold a number
    if text == "auto":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    indices = text.split(",")
    if len(indices) > 1 and all(index.strip().isdigit() for index in indices):
        return [int(index) for index in indices]
    raise ValueError(f"devices must be auto, a count of 1 or more, or GPU indices like 0,1; got {text!r}")


def dataset_paths(dataset_dir: Path) -> dict[str, Path]:
    """The four data fields for a folder laid out as data_prep.py writes it."""
    dataset_dir = Path(dataset_dir)
    return {
        "train_dir": dataset_dir / "train_images",
        "val_dir": dataset_dir / "val_images",
        "train_csv": dataset_dir / "train.csv",
        "val_csv": dataset_dir / "val.csv",
    }


LEGACY_FIELDS = {"accelerator": "device"}  # config.json keys of older runs -> today's field
YAML_SUFFIXES = (".yaml", ".yml")  # --config files read as YAML; any other is read as JSON (a run's config.json)


def config_yaml(config: Config) -> str:
    """`config` as YAML, every field in declaration order (paths as strings): what --print_config prints and
    --config reads back."""
    import yaml  # here, not at the top: --help and a bad option are answered without it

    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)


def save_config(config: Config, directory: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the resolved config (plus script-specific `extra` values: keys of RUN_RECORD_KEYS) to
    directory/config.json."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    payload = {**config.to_dict(), **(extra or {})}
    return write_atomically(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n"))


def config_values(path: Path) -> dict[str, Any]:
    """The field values of a config.json written by save_config, or of a YAML file of fields (YAML_SUFFIXES; what
    --print_config prints), as the file holds them: older field names renamed (LEGACY_FIELDS), the keys of
    RUN_RECORD_KEYS left out. A file that cannot be read, is not a mapping or holds another key raises a
    ValueError whose one line names the file and the problem. The command line's --config reads files with this
    (face_match_age.command_line), and types and checks the values of the fields a script takes."""
    path = Path(path)
    kind = "YAML" if path.suffix.lower() in YAML_SUFFIXES else "JSON"
    try:
        values = _read_yaml(path) if kind == "YAML" else json.loads(path.read_text())
    except OSError as error:
        raise ValueError(f"--config {path}: cannot read it ({error.strerror or error})") from None
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError and YAMLError (see _read_yaml)
        raise ValueError(f"--config {path}: not a {kind} file ({' '.join(str(error).split())})") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a {kind} mapping of config fields, got {type(values).__name__}")
    values = {LEGACY_FIELDS.get(name, name): value for name, value in values.items()}
    unknown = [name for name in values if name not in field_names() and name not in RUN_RECORD_KEYS]
    if unknown:
        raise ValueError(
            f"--config {path}: unknown key {_with_suggestions(unknown)}: neither a config field nor a key that "
            "scripts save beside them; correct or remove it"
        )
    return {name: value for name, value in values.items() if name in field_names()}


def _read_yaml(path: Path) -> Any:
    """The YAML document of `path`; a YAML syntax error is raised as a ValueError, as json's are."""
    import yaml  # here, not at the top: --help and a bad option are answered without it

    text = path.read_text()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(str(error)) from None
