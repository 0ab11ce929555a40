"""The age model: InceptionResnetV1 (VGGFace2) backbone and a 101-bin age head trained with KL divergence.

Age is treated as a distribution over the 101 whole ages 0..100. Each label becomes a Gaussian
around the true age (neighbouring ages look alike, so near misses should cost little); the loss is
KL(target || softmax(logits)). The predicted age is the distribution's expected value and its
standard deviation is the model's uncertainty.

Run `python model.py` to check an installation: it reports the device and precision this machine
would use, where the pretrained weights are expected, and builds the model once.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn

from config import MAX_AGE, MIN_AGE, NUM_AGE_BINS, Config, ConfigArgumentParser, add_config_arguments, parse_config
from device import choose_device
from weights import PretrainedWeightsError, load_backbone, weights_path

EMBEDDING_DIM = 512  # InceptionResnetV1's embedding size


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


def expected_age(logits: torch.Tensor) -> torch.Tensor:
    """Mean of the predicted age distribution (B)."""
    return logits.float().softmax(dim=1) @ age_bins(logits.device)


def age_std(logits: torch.Tensor) -> torch.Tensor:
    """Standard deviation of the predicted age distribution (B): the model's uncertainty in years."""
    probabilities = logits.float().softmax(dim=1)
    bins = age_bins(logits.device)
    mean = probabilities @ bins
    variance = probabilities @ (bins ** 2) - mean ** 2
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


class CumulativeScore(torchmetrics.Metric):
    """CS@k: the share of predictions within `years` of the true age (higher is better)."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, years: float = 5.0) -> None:
        super().__init__()
        self.years = years
        self.add_state("hits", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        self.hits += ((predicted - target).abs() <= self.years).sum()
        self.total += target.numel()

    def compute(self) -> torch.Tensor:
        return self.hits / self.total.clamp_min(1)


def build_age_head(hidden_dim: int, dropout: float) -> nn.Sequential:
    """512-d embedding -> 101 age logits, as in the seed: Dropout, Linear, ReLU, BatchNorm1d, Linear."""
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(EMBEDDING_DIM, hidden_dim),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden_dim),
        nn.Linear(hidden_dim, NUM_AGE_BINS),
    )


class AgeEstimationModel(L.LightningModule):
    """Age from a standardised 3x160x160 face tensor (see imaging.face_to_tensor).

    `load_pretrained_weights=False` builds the same network without fetching the pretrained backbone;
    `load_from_checkpoint` uses it, since the checkpoint already holds the trained backbone.
    """

    def __init__(self, pretrained: str | None = "vggface2", learning_rate: float = 1e-4, label_sigma: float = 2.0,
                 head_hidden_dim: int = 256, head_dropout: float = 0.2, freeze_backbone_epochs: int = 0,
                 load_pretrained_weights: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["load_pretrained_weights"])
        self.backbone = load_backbone(pretrained if load_pretrained_weights else None)
        self.head = build_age_head(head_hidden_dim, head_dropout)
        # One metric object per stage, so Lightning accumulates and resets each over its own epoch.
        self.stage_metrics = nn.ModuleDict()
        for stage in ("train", "val", "test"):
            self.stage_metrics[f"{stage}_mae"] = torchmetrics.MeanAbsoluteError()
            self.stage_metrics[f"{stage}_cs5"] = CumulativeScore(5.0)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None, **kwargs):
        """Lightning's loader, safe by default: plain tensors and data only (weights_only=True), and
        no download of pretrained weights that the checkpoint replaces anyway."""
        kwargs.setdefault("load_pretrained_weights", False)
        kwargs.setdefault("weights_only", True)
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location,
                                             hparams_file=hparams_file, strict=strict, **kwargs)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """Age logits (B x 101) for a batch of standardised faces (B x 3 x 160 x 160)."""
        return self.head(self.backbone(faces))

    def _common_step(self, batch, stage: str) -> torch.Tensor:
        faces, ages = batch[0], batch[1]
        logits = self(faces)
        loss = age_kl_loss(logits, ages, self.hparams.label_sigma)
        predicted = expected_age(logits)
        mae, cs5 = self.stage_metrics[f"{stage}_mae"], self.stage_metrics[f"{stage}_cs5"]
        mae(predicted, ages.float())
        cs5(predicted, ages.float())
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(ages),
                 sync_dist=stage != "train")
        self.log(f"{stage}/mae", mae, on_step=False, on_epoch=True, prog_bar=stage != "train")
        self.log(f"{stage}/cs5", cs5, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        faces = batch[0] if isinstance(batch, (list, tuple)) else batch
        logits = self(faces)
        return {"age": expected_age(logits), "age_std": age_std(logits)}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Only trainable parameters: FreezeBackbone adds the backbone's as a new group when it thaws.
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(trainable, lr=self.hparams.learning_rate)


class FreezeBackbone(BaseFinetuning):
    """Keeps the backbone frozen (weights and BatchNorm statistics) for the first `epochs` epochs,
    or for the whole run when `epochs` is -1, so the new head learns before it can disturb the backbone."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def freeze_before_training(self, pl_module: AgeEstimationModel) -> None:
        self.freeze(pl_module.backbone, train_bn=False)  # BatchNorm too: its statistics are part of the pretrained features

    def finetune_function(self, pl_module: AgeEstimationModel, current_epoch: int, optimizer) -> None:
        if current_epoch == self.epochs:
            self.unfreeze_and_add_param_group(pl_module.backbone, optimizer, initial_denom_lr=1.0)


def backbone_freezing(epochs: int) -> FreezeBackbone | None:
    """The callback for `freeze_backbone_epochs` (0: train everything from the start)."""
    return None if epochs == 0 else FreezeBackbone(epochs)


def build_age_model(config: Config) -> AgeEstimationModel:
    """A new age model from the config's model fields."""
    return AgeEstimationModel(
        pretrained=None if config.pretrained == "none" else config.pretrained,
        learning_rate=config.learning_rate, label_sigma=config.label_sigma,
        head_hidden_dim=config.head_hidden_dim, head_dropout=config.head_dropout,
        freeze_backbone_epochs=config.freeze_backbone_epochs,
    )


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unsafe or not an age model."""


def load_age_model(path: Path, map_location: str | torch.device = "cpu") -> AgeEstimationModel:
    """Load a trained age model for inference (eval mode) from a Lightning checkpoint.

    Loading uses weights_only=True, so a checkpoint cannot run code: one that carries arbitrary
    Python objects is refused with CheckpointError.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no age checkpoint at {path}: train one with `uv run python train.py`, "
                              "or point --ckpt at an existing .ckpt file")
    try:
        model = AgeEstimationModel.load_from_checkpoint(path, map_location=map_location)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"refused to load {path}: it holds Python objects beyond tensors and plain data, which could run code "
            f"when unpickled (loaded with weights_only=True). Only use checkpoints from a source you trust, saved "
            f"by train.py. Detail: {str(error).splitlines()[0][:200]}") from None
    except Exception as error:  # torch and Lightning raise many types for truncated or foreign files
        raise CheckpointError(f"{path} is not a readable age-model checkpoint "
                              f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = ConfigArgumentParser(description="Check this installation: device, precision, pretrained weights, model.")
    add_config_arguments(parser, ["pretrained", "accelerator", "precision"])
    _, config = parse_config(parser, argv)
    choice = choose_device(config.accelerator, config.precision)
    print(f"Device: {choice.describe()}")
    load_pretrained = config.pretrained != "none"
    if load_pretrained:
        location = weights_path(config.pretrained)
        print(f"Pretrained {config.pretrained} weights: {'found' if location.exists() else 'missing'} at {location}")
    try:
        model = build_age_model(config)
    except PretrainedWeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    parameters = sum(p.numel() for p in model.parameters())
    print(f"Age model: {parameters / 1e6:.1f}M parameters, {NUM_AGE_BINS} age bins ({MIN_AGE}-{MAX_AGE}); ready.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
