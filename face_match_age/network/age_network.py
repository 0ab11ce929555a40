"""The age network (AgeNetwork) and its distribution maths, without Lightning: all that inference needs.

AgeNetwork is the network: InceptionResnetV1 (the backbone) and a 101-bin age head, with forward
(logits) and predict (age, spread, interval). Inference loads it alone with load_age_model; training
wraps it in model.AgeEstimationModel, the LightningModule that adds the loss, metrics and optimizer.

Age is treated as a distribution over the 101 whole ages 0..100. Each label becomes a Gaussian
around the true age (neighbouring ages look alike, so near misses should cost little); the loss is
KL(target || softmax(logits)). The predicted age is the distribution's expected value and its
standard deviation is the model's uncertainty.

This package never imports Lightning, so that infer.py starts without it: a cold start is part of what
a user waits for.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from face_match_age.error_messages import error_summary
from face_match_age.files.checkpoint_files import DamagedCheckpointError, damaged_message, load_checked
from face_match_age.network.weights import load_backbone
from face_match_age.settings import MAX_AGE, MIN_AGE, NUM_AGE_BINS, Config

EMBEDDING_DIM = 512  # InceptionResnetV1's embedding size
DAMAGED_ADVICE = (
    "Point --ckpt at another checkpoint (last.ckpt and best.ckpt of a run are separate files) "
    "or train again with `uv run python train.py`"
)


def age_bins(device: torch.device | None = None) -> torch.Tensor:
    """The ages 0..100 as floats, one per output bin."""
    return torch.arange(MIN_AGE, MAX_AGE + 1, dtype=torch.float32, device=device)


def gaussian_label_distribution(ages: torch.Tensor, sigma: float) -> torch.Tensor:
    """For each true age, a normal density over the bins 0..100 renormalised to sum to 1 (B x 101).

    Renormalising over the bins keeps ages 0 and 100 valid targets: their mass is not lost off the edge.
    """
    bins = age_bins(ages.device)
    density = torch.exp(-0.5 * ((bins[None, :] - ages.float()[:, None]) / sigma) ** 2)
    return density / density.sum(dim=1, keepdim=True)


def age_prior_logits(ages, sigma: float) -> torch.Tensor:
    """Log-probabilities (101) of a set of ages' histogram smoothed with the label sigma: the mean of their
    Gaussian label distributions, so the prior is exactly the average training target. A head whose logits are
    these predicts the training distribution for every face, the best guess before the faces teach anything.
    """
    prior = gaussian_label_distribution(torch.as_tensor(list(ages)), sigma).mean(dim=0)
    # A floor, not zero: bins far from every training age keep a finite logit the loss can still raise.
    return prior.clamp_min(1e-8).log()


def expected_age(logits: torch.Tensor) -> torch.Tensor:
    """Mean of the predicted age distribution (B)."""
    return logits.float().softmax(dim=1) @ age_bins(logits.device)


def age_std(logits: torch.Tensor) -> torch.Tensor:
    """Standard deviation of the predicted age distribution (B): the model's uncertainty in years."""
    probabilities = logits.float().softmax(dim=1)
    bins = age_bins(logits.device)
    mean = probabilities @ bins
    variance = probabilities @ (bins**2) - mean**2
    return variance.clamp_min(0).sqrt()


def age_interval(logits: torch.Tensor, coverage: float = 0.9) -> torch.Tensor:
    """Central interval (B x 2: low, high ages) holding `coverage` of the predicted distribution."""
    cumulative = logits.float().softmax(dim=1).cumsum(dim=1)
    tail = (1.0 - coverage) / 2
    low = (cumulative < tail).sum(dim=1)
    high = (cumulative < 1.0 - tail).sum(dim=1)
    return torch.stack([low, high], dim=1).float() + MIN_AGE


def age_kl_loss(logits: torch.Tensor, ages: torch.Tensor, sigma: float) -> torch.Tensor:
    """KL(Gaussian label distribution || predicted distribution), averaged over the batch."""
    target = gaussian_label_distribution(ages, sigma)
    return F.kl_div(F.log_softmax(logits.float(), dim=1), target, reduction="batchmean")


def build_age_head(hidden_dim: int, dropout: float) -> nn.Sequential:
    """512-d embedding -> 101 age logits, as in the seed: Dropout, Linear, ReLU, BatchNorm1d, Linear."""
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(EMBEDDING_DIM, hidden_dim),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden_dim),
        nn.Linear(hidden_dim, NUM_AGE_BINS),
    )


class AgeNetwork(nn.Module):
    """The age network: InceptionResnetV1 backbone (`self.backbone`) + age head (`self.head`).

    The one definition of the network: inference loads it on its own (load_age_model), training wraps it
    (model.AgeEstimationModel keeps it as `.network`). The defaults are the config's. `backbone_weights`
    names pretrained weights ('vggface2', 'casia-webface'); None starts from random ones, for a network
    whose weights come from a checkpoint. `hparams` holds the settings of the checkpoint it was loaded from.
    """

    def __init__(
        self,
        head_hidden_dim: int = Config.head_hidden_dim,
        head_dropout: float = Config.head_dropout,
        backbone_weights: str | None = None,
        hparams: dict | None = None,
    ) -> None:
        super().__init__()
        self.backbone = load_backbone(backbone_weights)
        self.head = build_age_head(head_hidden_dim, head_dropout)
        self.hparams = dict(hparams or {})
        self.trained_img_size: int | None = None  # the face size training used, where the checkpoint says it

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """Age logits (B x 101) for a batch of standardised faces (B x 3 x 160 x 160)."""
        return self.head(self.backbone(faces))

    @torch.no_grad()
    def start_at_prior(self, prior_logits: torch.Tensor) -> None:
        """Make the untrained head predict `prior_logits` (age_prior_logits) for every face: its last layer's
        bias becomes the prior and its weights zero. A fresh head otherwise sits at age 50 (uniform over the
        bins), and Adam moves its bias ~lr a step, so a small dataset would spend epochs learning only the age
        distribution. Zero weights, not random ones: those tilt each face's logits by ~0.6 at random, hiding
        the prior; their gradient is not zero, so they grow from the first step."""
        last = self.head[-1]
        assert isinstance(last, nn.Linear)  # build_age_head ends with the bins' layer; says so to the type checker
        last.bias.copy_(prior_logits.to(last.bias))
        last.weight.zero_()

    @torch.inference_mode()
    def predict(self, faces: torch.Tensor) -> dict[str, torch.Tensor]:
        """Expected age (B), its standard deviation (B) and the central 90% interval (B x 2) per face."""
        logits = self(faces)
        return {"age": expected_age(logits), "age_std": age_std(logits), "age_interval": age_interval(logits)}


# What a checkpoint says about using its network (its "usage" entry, written by train.py): everything infer.py,
# evaluate.py and a user's own code need besides the weights. Plain data, so it loads with weights_only=True.
USAGE_KEY = "usage"
STANDARDIZATION = "(pixels - 127.5) / 128"  # imaging.face_to_tensor: facenet-pytorch's fixed_image_standardization


def usage_record(input_size: int, head_hidden_dim: int) -> dict:
    """A checkpoint's `usage`: the face it takes (size, colours, scaling), the head's shape and the ages its bins
    stand for, and the function that loads it."""
    return {
        "input": f"RGB face crops as MTCNN cuts them (infer.py's detection), resized to {input_size}x{input_size}",
        "input_size": input_size,
        "standardization": STANDARDIZATION,
        "backbone": "InceptionResnetV1 (facenet-pytorch), 512-d embedding",
        "head_hidden_dim": head_hidden_dim,
        "age_bins": NUM_AGE_BINS,
        "min_age": MIN_AGE,
        "max_age": MAX_AGE,
        "output": "logits over the age bins; the age is the mean of their softmax, age_std its standard deviation",
        "load_with": "face_match_age.network.age_network.load_age_model(path)",
    }


# The AgeNetwork arguments a checkpoint's hyper_parameters set; one it lacks (an older checkpoint) keeps
# AgeNetwork's default, which is the config's.
_NETWORK_HPARAMS = ("head_hidden_dim", "head_dropout")
# model.AgeEstimationModel keeps its AgeNetwork as `.network`, so checkpoints name its weights "network.*".
_CHECKPOINT_PREFIX = "network."
# Checkpoints written before AgeEstimationModel wrapped AgeNetwork held the backbone and head at the top.
_PRE_NETWORK_PREFIXES = ("backbone.", "head.")


def checkpoint_parameter_name(name: str) -> str:
    """A parameter or buffer name from any checkpoint, as today's AgeEstimationModel names it: the old
    "backbone.*" and "head.*" become "network.backbone.*" and "network.head.*"; others stay as they are."""
    return _CHECKPOINT_PREFIX + name if name.startswith(_PRE_NETWORK_PREFIXES) else name


def upgrade_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict with today's names (see checkpoint_parameter_name), for old and new alike."""
    return {checkpoint_parameter_name(name): tensor for name, tensor in state_dict.items()}


def network_state_dict(state_dict: dict[str, torch.Tensor], part: str = "") -> dict[str, torch.Tensor]:
    """The AgeNetwork weights in a checkpoint's state dict (either layout), named as AgeNetwork names them;
    with `part` ("backbone" or "head"), only that part's weights, named as the part names them."""
    prefix = _CHECKPOINT_PREFIX + (f"{part}." if part else "")
    return {
        name.removeprefix(prefix): tensor
        for name, tensor in upgrade_state_dict(state_dict).items()
        if name.startswith(prefix)
    }


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unsafe or not an age model."""


def load_age_model(path: Path, map_location: str | torch.device = "cpu") -> AgeNetwork:
    """Load a trained age network for inference (eval mode) from a checkpoint written by train.py.

    The one loader of age checkpoints (infer.py, evaluate.py, the Python API). Loading uses weights_only=True,
    so a checkpoint cannot run code: one that carries arbitrary Python objects is refused with CheckpointError,
    as is a truncated or corrupt file, a flipped byte in its weights included (load_checked).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no age checkpoint at {path}: train one with `uv run python train.py`, "
            "or point --ckpt at an existing .ckpt file"
        )
    try:
        checkpoint = load_checked(path, map_location)
    except DamagedCheckpointError as damage:
        raise CheckpointError(damaged_message(path, str(damage), DAMAGED_ADVICE)) from None
    except Exception as error:  # noqa: BLE001  torch raises many types for foreign files
        if isinstance(error, pickle.UnpicklingError):
            raise CheckpointError(
                f"refused to load {path}: it holds Python objects beyond tensors and plain data, which could run "
                "code when unpickled (loaded with weights_only=True). Only use checkpoints from a source you trust, "
                "saved by train.py"
            ) from None
        raise CheckpointError(f"{path} is not a readable age-model checkpoint ({error_summary(error)})") from None
    return _network_from(checkpoint, path).to(map_location).eval()


def _network_from(checkpoint, path: Path) -> AgeNetwork:
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path} is not an age-model checkpoint (no state_dict); use best.ckpt or last.ckpt written by train.py"
        )
    hparams = checkpoint.get("hyper_parameters") or {}
    settings = {name: hparams[name] for name in _NETWORK_HPARAMS if name in hparams}
    weights = network_state_dict(checkpoint["state_dict"])
    hidden = _head_hidden_dim(weights)
    if hidden is not None and settings.setdefault("head_hidden_dim", hidden) != hidden:
        raise CheckpointError(
            f"{path} records head_hidden_dim {settings['head_hidden_dim']} but its weights have {hidden}: it was "
            "edited or written by other code; use best.ckpt or last.ckpt as train.py wrote them"
        )
    usage = checkpoint.get(USAGE_KEY) or {}
    bins = (usage.get("min_age", MIN_AGE), usage.get("max_age", MAX_AGE))
    if bins != (MIN_AGE, MAX_AGE):
        raise CheckpointError(
            f"{path} predicts ages {bins[0]}..{bins[1]}, but this version's age bins are {MIN_AGE}..{MAX_AGE}; "
            "use a checkpoint trained by this version"
        )
    network = AgeNetwork(**settings, hparams=hparams)
    # The face size training saw: its usage record, or (checkpoints written before it) the data module's settings,
    # which Lightning saves. Inference and evaluation feed the network faces of this size.
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    network.trained_img_size = usage.get("input_size", data.get("img_size"))
    try:
        network.load_state_dict(weights, assign=True)  # the tensors read become the weights: no copy
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not hold this age model's weights ({error_summary(error)})") from None
    return network


def _head_hidden_dim(weights: dict[str, torch.Tensor]) -> int | None:
    """The width of the age head in `weights` (its first Linear's output size), or None without one: a
    checkpoint that does not record head_hidden_dim (older ones) is loaded at the width it was trained with."""
    first_linear = weights.get("head.1.weight")
    return int(first_linear.shape[0]) if isinstance(first_linear, torch.Tensor) and first_linear.ndim == 2 else None
