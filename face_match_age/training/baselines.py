"""What an age model must beat: the scores of guessing without looking at the faces.

Two guesses, each the best of its kind: the training median age for every face (the constant of least MAE;
its MAE and CS@5 sit beside the model's), and the training age distribution for every face (the prior the
head starts from; its KL loss sits beside the model's loss). A model at or above these has learned only the
age distribution, whatever its curves do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from face_match_age.evaluation.array_metrics import median_age_guess
from face_match_age.network.age_network import age_kl_loss, age_prior_logits


@dataclass(frozen=True)
class GuessingBaseline:
    median_age: float  # of the training ages: the guess behind mae and cs5
    mae: float  # validation MAE (years) of predicting median_age for every face
    cs5: float  # validation CS@5 of the same guess
    loss: float  # validation KL loss of predicting the training age distribution for every face

    def scalars(self) -> dict[str, float]:
        """TensorBoard tags, each beside the curve it is the baseline of (callbacks.SCALAR_LAYOUT)."""
        return {"val/mae_baseline": self.mae, "val/cs5_baseline": self.cs5, "val/loss_baseline": self.loss}

    def describe(self) -> str:
        return (
            f"predicting the training median age ({self.median_age:g}) for every validation face: MAE "
            f"{self.mae:.2f} years, CS@5 {self.cs5:.3f}; predicting the training age distribution: loss {self.loss:.3f}"
        )


def guessing_baseline(training_ages, validation_ages, label_sigma: float) -> GuessingBaseline:
    """The baseline scores on `validation_ages` of guesses drawn from `training_ages` alone."""
    median = median_age_guess(training_ages, validation_ages)
    ages = torch.as_tensor(list(validation_ages))
    prior = age_prior_logits(training_ages, label_sigma).expand(len(ages), -1)
    return GuessingBaseline(
        median["median_age"], median["mae"], median["cs5"], float(age_kl_loss(prior, ages, label_sigma))
    )
