"""Pretrained InceptionResnetV1 weights, found exactly where facenet-pytorch looks for them.

facenet-pytorch keeps its weights in `$TORCH_HOME/checkpoints/` (TORCH_HOME defaults to
`$XDG_CACHE_HOME/torch`, i.e. `~/.cache/torch`). A file placed there by hand therefore works offline,
for this toolkit and for plain facenet-pytorch alike. A missing file is downloaded once; when that
fails the user gets one message naming the file, the folder, the URL, the cause and what to do, one per
line (a MissingWeightsError, which every script prints whole).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from facenet_pytorch import InceptionResnetV1

from face_match_age.error_messages import MultiLineError, error_summary
from face_match_age.files.checkpoint_files import DamagedCheckpointError, damaged_message, load_checked
from face_match_age.files.downloader import DownloadError, download

_RELEASE_URL = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"


@dataclass(frozen=True)
class PretrainedWeights:
    file_name: str
    num_classes: int  # size of the identity classifier the file carries; needed to load it strictly

    @property
    def url(self) -> str:
        return _RELEASE_URL + self.file_name


PRETRAINED = {
    "vggface2": PretrainedWeights("20180402-114759-vggface2.pt", 8631),
    "casia-webface": PretrainedWeights("20180408-102900-casia-webface.pt", 10575),
}


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights that are neither on disk nor downloadable, or that are unreadable."""


class MissingWeightsError(PretrainedWeightsError, MultiLineError):
    """Pretrained weights neither on disk nor downloadable; the message lists file, folder, URL, cause and
    what to do on lines of their own."""


def weights_path(name: str) -> Path:
    """Where facenet-pytorch keeps (and we look for) the `name` weights."""
    return torch_home() / "checkpoints" / _spec(name).file_name


def torch_home() -> Path:
    """$TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch: the rule of facenet-pytorch (which does
    not export it) and of torch itself. Not torch.hub.get_dir(): torch.hub.set_dir() moves that folder
    while facenet-pytorch keeps reading these variables."""
    default = os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", default)))


RANDOM_WEIGHTS_HINT = "or pass --pretrained none to start from random weights"


def ensure_weights(name: str, hint: str = RANDOM_WEIGHTS_HINT) -> Path:
    """The path of the `name` weights, downloading them first when they are not there.
    `hint` ends the error message with the way out that fits the calling script."""
    path, spec = weights_path(name), _spec(name)
    if path.exists():
        return path
    try:
        download(spec.url, path)
    except DownloadError as error:
        raise MissingWeightsError(
            f"The pretrained '{name}' InceptionResnetV1 weights are not on this machine and could not be "
            f"downloaded.\n  file:   {spec.file_name}\n  folder: {path.parent}  (set TORCH_HOME to use another)\n"
            f"  url:    {spec.url}\n  cause:  {error.reason}\n"
            f"Download the file where there is internet access and copy it into that folder, {hint}."
        ) from None
    return path


def weights_identity(path: Path) -> dict:
    """What tells this weights file from another, recorded beside results computed with it (batch.json, an
    embedding store's settings): its name and the SHA-256 of its bytes.

    A hash rather than size and date: the default file lives in a per-user cache ($TORCH_HOME) that is
    downloaded again, or copied between machines, and shards embedded on several machines must merge; an
    identical file there gets another date and folder, while other weights (the same size in the same layout)
    get another hash however they were written. It reads the file once, about 0.2 s for VGGFace2's 107 MB,
    next to the seconds the models take to load."""
    _require_file(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
    except OSError as error:
        raise PretrainedWeightsError(f"cannot read the weights file {path} ({error.strerror or error})") from None
    return {"file": Path(path).name, "sha256": digest.hexdigest()}


def load_backbone(
    name: str | None, *, weights_file: Path | None = None, hint: str = RANDOM_WEIGHTS_HINT
) -> InceptionResnetV1:
    """InceptionResnetV1 returning 512-d unit embeddings, with `name` weights ('vggface2',
    'casia-webface') or random ones (None / 'none'). `weights_file` names a file directly."""
    backbone = InceptionResnetV1(pretrained=None, classify=False)
    if weights_file is not None:
        _require_file(weights_file)
        spec, path = None, Path(weights_file)
    elif name is None or name == "none":
        return _drop_classifier(backbone)
    else:
        spec, path = _spec(name), ensure_weights(name, hint)
    # Deleting the file to download it again only helps for the file this toolkit downloads into TORCH_HOME.
    remedy = (
        f"Check that {path} is a complete InceptionResnetV1 state dict, or name another file."
        if weights_file is not None
        else "Delete it and run again to download a fresh copy."
    )
    state_dict = _read_state_dict(path, remedy)
    # The files carry the identity classifier they were trained with; it is loaded to check the
    # layout strictly, then dropped, since only the embedding is used here.
    num_classes = spec.num_classes if spec else state_dict.get("logits.weight", torch.empty(0, 512)).shape[0]
    backbone.logits = torch.nn.Linear(512, num_classes)
    try:
        # assign: the tensors just read become the weights, rather than being copied into random ones (a
        # second pass over 100 MB, a quarter of a cold start's model load)
        backbone.load_state_dict(state_dict, assign=True)
    except RuntimeError as error:
        raise PretrainedWeightsError(
            f"{path} does not hold InceptionResnetV1 weights with the expected layout "
            f"({error_summary(error)}). {remedy}"
        ) from None
    return _drop_classifier(backbone)


def save_random_weights(path: Path, name: str = "vggface2", adjust=None) -> Path:
    """Randomly initialised weights in the layout of the released `name` file, for offline runs where only
    the code path matters (speed, tests, the notebook). `adjust(network)` may change them before saving."""
    network = InceptionResnetV1(classify=True, num_classes=_spec(name).num_classes)
    if adjust is not None:
        adjust(network)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return path


def _read_state_dict(path: Path, remedy: str) -> dict[str, torch.Tensor]:
    try:
        state_dict = load_checked(path)
    except DamagedCheckpointError as damage:
        raise PretrainedWeightsError(damaged_message(path, str(damage), remedy, kind="weights file")) from None
    except Exception as error:  # noqa: BLE001  torch raises several types for foreign files
        raise PretrainedWeightsError(
            f"{path} is not a readable weights file ({error_summary(error)}). {remedy}"
        ) from None
    if not isinstance(state_dict, dict):
        raise PretrainedWeightsError(f"{path} holds a {type(state_dict).__name__}, not a state dict of weights.")
    return state_dict


def _require_file(path: Path) -> None:
    if not Path(path).is_file():
        raise PretrainedWeightsError(f"no weights file at {path}")


def _drop_classifier(backbone: InceptionResnetV1) -> InceptionResnetV1:
    # With classify=False facenet-pytorch never calls `logits`; keeping it would add 4.4M dead parameters.
    if hasattr(backbone, "logits"):
        del backbone.logits
    return backbone


def _spec(name: str) -> PretrainedWeights:
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained weights {name!r}; choose one of {', '.join(PRETRAINED)} or none")
    return PRETRAINED[name]
