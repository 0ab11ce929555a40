"""The predicted-versus-true age figure, drawn the same way for TensorBoard (callbacks.py) and for
`evaluate.py age` (predicted_vs_true.png)."""

from __future__ import annotations

import numpy as np

from config import MAX_AGE, MIN_AGE
from face_match_age.evaluation.age_decades import age_decade, decade_label


def predicted_vs_true_figure(true_ages, predicted):
    """A matplotlib Figure: predicted against true age (with the MAE in the title), and the MAE of each
    age decade beside it. `true_ages` and `predicted`: equal-length numbers (arrays, Series, CPU tensors)."""
    # A bare Figure, not pyplot: no GUI backend, and no global state changed in a user's notebook. Imported
    # here: only drawing needs matplotlib, and training imports this module.
    from matplotlib.figure import Figure

    true_ages, predicted = np.asarray(true_ages, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    errors = np.abs(predicted - true_ages)
    figure = Figure(figsize=(10, 4.5))
    scatter, bars = figure.subplots(1, 2)
    scatter.scatter(true_ages, predicted, s=8, alpha=0.5)
    scatter.plot([MIN_AGE, MAX_AGE], [MIN_AGE, MAX_AGE], color="grey", linewidth=1)
    scatter.set(
        xlabel="true age",
        ylabel="predicted age",
        xlim=(MIN_AGE, MAX_AGE),
        ylim=(MIN_AGE, MAX_AGE),
        title=f"MAE {errors.mean():.2f} on {len(true_ages)} faces" if len(true_ages) else "no faces",
    )
    decades = age_decade(true_ages)
    present = np.unique(decades)
    bars.bar([decade_label(d) for d in present], [errors[decades == d].mean() for d in present])
    bars.set(xlabel="true age", ylabel="MAE (years)", title="MAE per decade")
    bars.tick_params(axis="x", labelrotation=45)
    figure.tight_layout()
    return figure
