"""The one configuration of face-match-age, shared by every script.

`Config` holds every path and setting. Each field is declared with `setting(default, why)`: the
reason is the field's one-line comment and also its `--help` text. Scripts expose fields as
command-line options (`batch_size` -> `--batch-size`) with `add_config_arguments`, build the resolved
config with `config_from_args`, and store it beside what they produce with `save_config`.

Importing this module has no side effects: no folders are made, no devices probed, nothing printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from face_match_age.files.output_files import write_atomically

MIN_AGE = 0  # youngest age the model can predict
MAX_AGE = 100  # oldest age; with MIN_AGE it gives 101 one-year bins
NUM_AGE_BINS = MAX_AGE - MIN_AGE + 1

PRETRAINED_CHOICES = ("vggface2", "casia-webface", "none")
FACE_SELECTION_CHOICES = ("largest", "probability", "center")
PRECISION_CHOICES = ("auto", "32-true", "16-mixed", "bf16-mixed", "64-true")


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


def setting(default: Any, why: str, *, aliases: tuple[str, ...] = (), choices: tuple = ()) -> Any:
    """Declare a config field with its reason (shown by --help), CLI aliases and allowed values."""
    metadata = {"why": why, "aliases": aliases, "choices": choices}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


def _default_num_workers() -> int:
    return min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class Config:
    # --- data (written by data_prep.py, read by train.py) ---
    dataset_dir: Path = setting(Path("data/IMDB"), "root of the prepared dataset; IMDB-WIKI is the default source")
    train_dir: Path = setting(Path("data/IMDB/train_images"), "160x160 training face crops")
    val_dir: Path = setting(Path("data/IMDB/val_images"), "160x160 validation face crops")
    train_csv: Path = setting(Path("data/IMDB/train.csv"), "training labels: columns name, age (identity optional)")
    val_csv: Path = setting(Path("data/IMDB/val.csv"), "validation labels, same columns as train_csv")
    val_ratio: float = setting(0.2, "share of identities held out for validation (80/20 split)")
    data_root: Path = setting(Path("data"), "where data_prep.py keeps downloads, unpacked archives and prepared sets")
    min_face_score: float = setting(1.0, "IMDB-WIKI face_score below this is usually not a clean single face")
    min_image_side: int = setting(48, "smaller source images are placeholders or too blurry to age")
    img_size: int = setting(160, "input side of InceptionResnetV1 as trained on VGGFace2; changing it needs retraining")

    # --- model ---
    pretrained: str = setting(
        "vggface2", "backbone weights; VGGFace2 faces carry the most age variety", choices=PRETRAINED_CHOICES
    )
    head_hidden_dim: int = setting(256, "width of the age head between the 512-d embedding and the 101 bins")
    head_dropout: float = setting(0.2, "dropout before the age head; the backbone already generalises well")
    label_sigma: float = setting(
        2.0, "std (years) of the Gaussian label distribution: neighbouring ages look alike", aliases=("--sigma",)
    )
    freeze_backbone_epochs: int = setting(0, "epochs with a frozen backbone before fine-tuning it (-1: never unfreeze)")

    # --- training ---
    batch_size: int = setting(256, "fits a 24 GB GPU at 160x160 in mixed precision; lower it if memory runs out")
    num_workers: int = setting(_default_num_workers, "data-loading processes; more than the CPU cores only thrashes")
    learning_rate: float = setting(
        1e-4, "Adam step size small enough not to wreck the pretrained backbone", aliases=("--lr",)
    )
    max_epochs: int = setting(50, "upper bound; early stopping usually ends training sooner")
    patience: int = setting(6, "epochs without a better validation MAE before early stopping")
    seed: int = setting(42, "seeds Python, NumPy and torch so runs can be repeated")
    precision: str = setting(
        "auto", "auto: bf16-mixed or 16-mixed on CUDA, 32-true elsewhere", choices=PRECISION_CHOICES
    )
    accelerator: str = setting("auto", "auto picks cuda, then mps, then cpu", choices=("auto", "cuda", "mps", "cpu"))
    devices: str = setting("auto", "GPUs (or CPU processes) per node: a count, a list like 0,1, or auto for all")
    num_nodes: int = setting(1, "machines taking part in distributed (DDP) training")
    strategy: str = setting("auto", "Lightning strategy; auto is DDP when more than one device is used")
    limit_train_batches: str = setting(
        "1.0", "share (0-1.0) or count (an integer) of training batches per epoch, for quick runs"
    )
    limit_val_batches: str = setting("1.0", "share (0-1.0) or count (an integer) of validation batches per epoch")
    log_every_n_steps: int = setting(50, "training steps between logged points; lower for tiny datasets")
    logged_sample_faces: int = setting(16, "validation faces drawn into the TensorBoard grid each epoch")
    figure_sample_size: int = setting(512, "most validation faces behind the predicted-vs-true figure; bounds its cost")
    resume_checkpoint: Path | None = setting(
        None, "checkpoint to resume from: weights, optimizer, epoch and callbacks", aliases=("--ckpt",)
    )
    checkpoint_dir: Path = setting(
        Path("checkpoints"), "where best.ckpt and last.ckpt are written", aliases=("--ckpt-dir",)
    )
    checkpoint_every_n_steps: int = setting(
        500,
        "training steps between in-epoch saves of last.ckpt, which bound "
        "what a crash loses (an IMDB epoch at batch 256 is ~1,800); 0: epoch ends only",
    )
    log_dir: Path = setting(Path("logs/face_age_det"), "TensorBoard folder: tensorboard --logdir logs/face_age_det")

    # --- inference ---
    best_checkpoint: Path = setting(
        Path("checkpoints/best.ckpt"), "age model that inference loads by default", aliases=("--ckpt",)
    )
    verification_threshold: float = setting(
        0.7, "cosine similarity above which two faces count as one person", aliases=("--threshold",)
    )
    mtcnn_margin: int = setting(
        14, "pixels of context kept around the detected box, as facenet-pytorch's finetuning example"
    )
    mtcnn_min_face_size: int = setting(20, "smallest face (pixels) MTCNN looks for; smaller ones are too blurry to age")
    detection_max_side: int = setting(
        1600, "photos larger than this (pixels) are shrunk for detection only; crops come from the original"
    )
    inference_batch_size: int = setting(
        64, "faces per forward pass at inference; fits any GPU and keeps CPU memory low"
    )
    face_selection: str = setting(
        "largest",
        "which face to use when a photo holds several: the subject is usually the biggest",
        choices=FACE_SELECTION_CHOICES,
        aliases=("--face",),
    )

    def __post_init__(self) -> None:
        problems = list(_validation_problems(self))
        if problems:
            raise ValueError("invalid configuration: " + "; ".join(problems))

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` applied; unknown names raise a ValueError that suggests close names."""
        unknown = [name for name in changes if name not in field_names()]
        if unknown:
            raise ValueError(_unknown_names_message(unknown))
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
    if config.num_nodes < 1 or config.log_every_n_steps < 1:
        yield "num_nodes and log_every_n_steps must be at least 1"
    if config.freeze_backbone_epochs < -1:
        yield f"freeze_backbone_epochs must be -1 (always frozen) or more, got {config.freeze_backbone_epochs}"


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(Config))


def _unknown_names_message(unknown: list[str]) -> str:
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, field_names(), n=1)
        parts.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return f"unknown config field {', '.join(parts)}; known fields: {', '.join(field_names())}"


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, names: typing.Iterable[str]) -> None:
    """Register the named config fields as options of `parser`; each defaults to Config()'s value."""
    names = list(names)
    unknown = [name for name in names if name not in field_names()]
    if unknown:
        raise ValueError(_unknown_names_message(unknown))
    hints = typing.get_type_hints(Config)
    fields = {f.name: f for f in dataclasses.fields(Config)}
    for name in names:
        meta = fields[name].metadata
        kind = _optional_inner(hints[name])
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": meta["why"]}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            kwargs["metavar"] = name.upper()
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
            kwargs.pop("metavar", None)
        # The short conventional name (--lr, --ckpt) first, so usage lines show it; the field's name also works.
        parser.add_argument(*meta["aliases"], option_name(name), **kwargs)


def _optional_inner(kind: Any) -> Any:
    """`X | None` (or Optional[X]) -> X, so argparse gets a callable type."""
    if typing.get_origin(kind) in (Union, types.UnionType):  # Optional[X] and X | None have different origins
        inner = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        if len(inner) == 1:
            return inner[0]
    return kind


def batch_limit(text: str) -> int | float:
    """Lightning's limit_*_batches from its text form: '0.25' is a share, '3' a count of batches."""
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    """The resolved config: `base` (defaults) with every config option given on the command line."""
    given = {name: value for name, value in vars(args).items() if name in field_names()}
    return (base or Config()).replace(**given)


class ConfigArgumentParser(argparse.ArgumentParser):
    """ArgumentParser that names the closest known option when it meets an unknown one."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        unknown_options = [extra for extra in extras if extra.startswith("-")]
        if unknown_options:
            known = [opt for action in self._actions for opt in action.option_strings]
            hints = []
            for extra in unknown_options:
                close = difflib.get_close_matches(extra.split("=")[0], known, n=1)
                hints.append(extra + (f" (did you mean {close[0]}?)" if close else ""))
            self.error(f"unknown option {', '.join(hints)}; run with --help to list the options")
        if extras:
            self.error(f"unexpected argument {' '.join(extras)}; run with --help for the usage")
        return parsed


def parse_config(
    parser: argparse.ArgumentParser, argv: list[str] | None, base: Config | None = None
) -> tuple[argparse.Namespace, Config]:
    """Parse `argv` over `base` (default Config()); a config value that fails validation ends as a
    usage error, not a traceback."""
    args = parser.parse_args(argv)
    try:
        return args, config_from_args(args, base)
    except ValueError as error:
        parser.error(str(error))


def save_config(config: Config, directory: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the resolved config (plus script-specific `extra` values) to directory/config.json."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    payload = {**config.to_dict(), **(extra or {})}
    return write_atomically(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n"))


def load_config(path: Path) -> Config:
    """Read a config.json written by save_config; keys that are not config fields are ignored."""
    values = json.loads(Path(path).read_text())
    hints = typing.get_type_hints(Config)
    known = {
        name: _optional_inner(hints[name])(value)
        if _optional_inner(hints[name]) is Path and value is not None
        else value
        for name, value in values.items()
        if name in field_names()
    }
    return Config(**known)
