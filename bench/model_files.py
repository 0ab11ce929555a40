"""The weights every inference benchmark runs on: the real ones where present, else calibrated random ones."""

from __future__ import annotations

import os
from pathlib import Path


def ensure_models(scratch: Path, checkpoint: Path | None) -> tuple[Path, list[str]]:
    """(the age checkpoint to use, a note for each random stand-in). Calibrated random VGGFace2-layout weights
    go into TORCH_HOME (moved under `scratch`) when missing, and a calibrated random age checkpoint into
    `scratch` when `checkpoint` is not a file. Speed does not depend on weight values, but numerics do: with
    untrained BatchNorm statistics every face gives the same output and no option could change anything.
    The caller prints the notes (bench.options prints them under its table)."""
    from face_match_age.inference.numerics import calibrate_batchnorm
    from face_match_age.network.weights import save_random_weights, weights_path
    from model import AgeEstimationModel, save_age_checkpoint

    notes = []
    if not weights_path("vggface2").exists():
        os.environ["TORCH_HOME"] = str(scratch / "torch_home")
        save_random_weights(weights_path("vggface2"), "vggface2", adjust=calibrate_batchnorm)
        notes.append("no VGGFace2 weights here; random ones with calibrated BatchNorm statistics")
    if checkpoint is None or not checkpoint.is_file():
        notes.append("no age checkpoint given; a random one with calibrated BatchNorm statistics")
        model = AgeEstimationModel(pretrained=None)
        calibrate_batchnorm(model)
        checkpoint = save_age_checkpoint(model, scratch / "age.ckpt")
    return checkpoint, notes
