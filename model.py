"""The training wrapper: AgeEstimationModel, a LightningModule around the age network.

The network itself, InceptionResnetV1 (VGGFace2) plus a 101-bin age head, is AgeNetwork in
face_match_age/network/age_network.py, with its maths; inference loads it there without Lightning.
AgeEstimationModel keeps one AgeNetwork as `.network` and adds what only training needs: the KL
divergence loss against Gaussian label distributions, metrics and the optimizer (backbone freezing,
like every training callback, is in callbacks.py).

Run `python model.py` to check an installation: it reports the device and precision this machine
would use, where the pretrained weights are expected, and builds the model once.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import lightning as L
import torch
import torchmetrics
from torch import nn

from config import (
    MAX_AGE,
    MIN_AGE,
    NUM_AGE_BINS,
    Config,
    ConfigArgumentParser,
    add_config_arguments,
    help_epilog,
    parse_config,
)
from face_match_age.device import DeviceUnavailableError, choose_device
from face_match_age.error_messages import print_error
from face_match_age.exit_codes import ExitCode
from face_match_age.files.checkpoint_files import archive_damage, damaged_message, save_checkpoint_file
from face_match_age.network.age_network import (
    DAMAGED_ADVICE,
    USAGE_KEY,
    AgeNetwork,
    CheckpointError,
    age_kl_loss,
    age_prior_logits,
    expected_age,
    upgrade_state_dict,
    usage_record,
)
from face_match_age.network.weights import PretrainedWeightsError, weights_path


class CumulativeScore(torchmetrics.Metric):
    """CS@k: the share of predictions within `years` of the true age (higher is better)."""

    higher_is_better = True
    full_state_update = False
    hits: torch.Tensor  # states, which add_state sets
    total: torch.Tensor

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


class AgeEstimationModel(L.LightningModule):
    """Trains AgeNetwork (`.network`) on standardised 3x160x160 faces (see imaging.face_to_tensor).

    The defaults are the config's, so a checkpoint that lacks a setting loads with the config's value.
    `load_pretrained_weights=False` builds the same network without fetching the pretrained backbone;
    `load_from_checkpoint` uses it, since the checkpoint already holds the trained backbone.
    """

    def __init__(
        self,
        pretrained: str | None = Config.pretrained,
        learning_rate: float = Config.learning_rate,
        label_sigma: float = Config.label_sigma,
        head_hidden_dim: int = Config.head_hidden_dim,
        head_dropout: float = Config.head_dropout,
        freeze_backbone_epochs: int = Config.freeze_backbone_epochs,
        head_learning_rate: float = Config.head_learning_rate,
        warmup_steps: int = Config.warmup_steps,
        lr_schedule: str = Config.lr_schedule,
        load_pretrained_weights: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["load_pretrained_weights"])
        self.network = AgeNetwork(
            head_hidden_dim, head_dropout, backbone_weights=pretrained if load_pretrained_weights else None
        )
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
        if isinstance(checkpoint_path, str | os.PathLike) and Path(checkpoint_path).is_file():
            damage = archive_damage(checkpoint_path)  # Lightning's torch.load would load a flipped byte silently
            if damage is not None:
                raise CheckpointError(damaged_message(checkpoint_path, damage, DAMAGED_ADVICE))
        return super().load_from_checkpoint(
            checkpoint_path, map_location=map_location, hparams_file=hparams_file, strict=strict, **kwargs
        )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Lightning calls this before loading the state dict, in load_from_checkpoint and in a Trainer resume:
        # checkpoints from before AgeNetwork name the weights "backbone.*" and "head.*", not "network.*".
        checkpoint["state_dict"] = upgrade_state_dict(checkpoint["state_dict"])
        # ...and before the optimizer's state: checkpoints from before the head had its own rate hold one group.
        head_count = len(list(self.network.head.parameters()))
        for state in checkpoint.get("optimizer_states", []):
            split_single_group(state, head_count)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Every checkpoint (best.ckpt, which holds the model only, and last.ckpt) says how to use the network:
        # the face size the data module fed it, its head and its age bins (age_network.usage_record).
        datamodule = getattr(self._trainer, "datamodule", None)  # set by fit(); the Trainer class does not declare it
        img_size = datamodule.hparams.get("img_size") if datamodule is not None else None
        checkpoint[USAGE_KEY] = usage_record(img_size or Config.img_size, self.hparams["head_hidden_dim"])

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """Age logits (B x 101) for a batch of standardised faces (B x 3 x 160 x 160)."""
        return self.network(faces)

    def _common_step(self, batch, stage: str) -> torch.Tensor:
        faces, ages = batch[0], batch[1]
        logits = self(faces)
        loss = age_kl_loss(logits, ages, self.hparams["label_sigma"])
        predicted = expected_age(logits)
        mae, cs5 = self._metric(f"{stage}_mae"), self._metric(f"{stage}_cs5")
        mae(predicted, ages.float())
        cs5(predicted, ages.float())
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(ages),
            sync_dist=stage != "train",
        )
        self.log(f"{stage}/mae", mae, on_step=False, on_epoch=True, prog_bar=stage != "train")
        self.log(f"{stage}/cs5", cs5, on_step=False, on_epoch=True)
        return loss

    def _metric(self, name: str) -> torchmetrics.Metric:
        metric = self.stage_metrics[name]
        assert isinstance(metric, torchmetrics.Metric)  # __init__ puts only metrics there; ModuleDict says Module
        return metric

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        faces = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.network.predict(faces)

    def start_at_prior(self, training_ages) -> None:
        """Start the head at the training set's age distribution (see AgeNetwork.start_at_prior), smoothed with
        the loss's label sigma. For a fresh run only: a resumed or loaded model keeps its trained head."""
        self.network.start_at_prior(age_prior_logits(training_ages, self.hparams["label_sigma"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # The new head and the pretrained backbone learn at their own rates, in named groups (TensorBoard's
        # lr-Adam/head and lr-Adam/backbone). Only trainable parameters: FreezeBackbone adds the backbone's
        # group when it thaws.
        groups = [{"name": "head", "params": _trainable(self.network.head), "lr": self.hparams["head_learning_rate"]}]
        backbone = _trainable(self.network.backbone)
        if backbone:
            groups.append({"name": "backbone", "params": backbone, "lr": self.hparams["learning_rate"]})
        return torch.optim.Adam(groups)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # The schedule scales each group's own rate, kept in the group as base_lr (saved with the optimizer, so a
        # resumed run goes on where it was); a group FreezeBackbone adds later joins the schedule where it stands.
        factor = learning_rate_factor(
            self.trainer.global_step,
            self.hparams["warmup_steps"],
            self.trainer.estimated_stepping_batches,
            self.hparams["lr_schedule"],
        )
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("base_lr", group["lr"]) * factor


def split_single_group(optimizer_state: dict, head_count: int) -> None:
    """Rewrite, in place, an Adam state saved with one parameter group (before the head and the backbone had
    their own rates) as configure_optimizers now groups it: "head" first, then "backbone", each keeping the old
    group's settings, so a run from then resumes as it was. The old group listed the trainable parameters in
    AgeNetwork's order, backbone before head; with a frozen backbone it held the head's alone."""
    groups = optimizer_state["param_groups"]
    if len(groups) != 1 or "name" in groups[0]:
        return
    (old,) = groups
    ids = list(old["params"])
    backbone, head = ids[: len(ids) - head_count], ids[len(ids) - head_count :]
    new_ids = {old_id: position for position, old_id in enumerate(head + backbone)}
    optimizer_state["state"] = {new_ids[i]: value for i, value in optimizer_state["state"].items()}
    settings = {key: value for key, value in old.items() if key != "params"}
    optimizer_state["param_groups"] = [{**settings, "name": "head", "params": list(range(len(head)))}]
    if backbone:
        optimizer_state["param_groups"].append(
            {**settings, "name": "backbone", "params": list(range(len(head), len(ids)))}
        )


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def learning_rate_factor(step: int, warmup_steps: int, total_steps: float, schedule: str) -> float:
    """The share of its base rate each group uses at optimizer step `step` (0 first): a linear rise over
    `warmup_steps` (to start a pretrained backbone gently), then 1 (constant) or a half cosine from 1 to 0 at
    `total_steps` (cosine)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or not math.isfinite(total_steps):
        return 1.0
    progress = (step - warmup_steps) / max(1.0, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_age_model(config: Config) -> AgeEstimationModel:
    """A new age model from the config's model fields."""
    return AgeEstimationModel(
        pretrained=None if config.pretrained == "none" else config.pretrained,
        learning_rate=config.learning_rate,
        label_sigma=config.label_sigma,
        head_hidden_dim=config.head_hidden_dim,
        head_dropout=config.head_dropout,
        freeze_backbone_epochs=config.freeze_backbone_epochs,
        head_learning_rate=config.head_learning_rate,
        warmup_steps=config.warmup_steps,
        lr_schedule=config.lr_schedule,
    )


def save_age_checkpoint(model: AgeEstimationModel, path: Path, img_size: int | None = None) -> Path:
    """Save `model` in the layout of train.py's best.ckpt without a Trainer (load_age_model reads it); `img_size`:
    the face size it takes, recorded in its usage (default: none recorded, as in checkpoints from before)."""
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": L.__version__,
        "epoch": None,
        "global_step": 0,
    }
    if img_size is not None:
        checkpoint[USAGE_KEY] = usage_record(img_size, model.hparams["head_hidden_dim"])
    return save_checkpoint_file(checkpoint, path)


def build_parser() -> ConfigArgumentParser:
    parser = ConfigArgumentParser(
        description="Check this installation: device, precision, pretrained weights, model.",
        epilog=help_epilog(
            [
                "uv run python model.py                        # what this machine would use; builds the model once",
                "uv run python model.py --device cpu --pretrained none   # without GPU or weight download",
            ],
            {
                ExitCode.OK: "ready",
                ExitCode.USAGE: "bad command line, or the --device asked for is not on this machine",
                ExitCode.MODEL: "the pretrained weights are missing and cannot be downloaded (the message says where "
                "to put them)",
            },
        ),
    )
    add_config_arguments(parser, ["pretrained", "device", "precision"])
    return parser


def main(argv: list[str] | None = None) -> int:
    _, config = parse_config(build_parser(), argv)
    try:
        choice = choose_device(config.device, config.precision)
    except DeviceUnavailableError as error:
        print_error(error)
        return ExitCode.USAGE
    print(f"Device: {choice.describe()}")
    load_pretrained = config.pretrained != "none"
    if load_pretrained:
        location = weights_path(config.pretrained)
        print(f"Pretrained {config.pretrained} weights: {'found' if location.exists() else 'missing'} at {location}")
    try:
        model = build_age_model(config)
    except PretrainedWeightsError as error:
        print_error(error)
        return ExitCode.MODEL
    parameters = sum(p.numel() for p in model.parameters())
    print(f"Age model: {parameters / 1e6:.1f}M parameters, {NUM_AGE_BINS} age bins ({MIN_AGE}-{MAX_AGE}); ready.")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
