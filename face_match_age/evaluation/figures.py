"""Every evaluation figure, drawn in one place: predicted-versus-true age (TensorBoard's callbacks.py and
`evaluate.py age`), the ROC and similarity histogram of `evaluate.py verify`, and `evaluate.py retrieve`'s
scores against the age gap.

Each returns a bare matplotlib Figure of a fixed size, not pyplot: no GUI backend, and no global state
changed in a user's notebook. matplotlib is imported inside the functions: only drawing needs it, and
training imports this module.
"""

from __future__ import annotations

import numpy as np

from face_match_age.evaluation import array_metrics
from face_match_age.evaluation.age_decades import age_decade, decade_label
from face_match_age.match_rule import AGE_GAP_BANDS, age_gap_band
from face_match_age.settings import MAX_AGE, MIN_AGE

# The left edge of the ROC's logarithmic false-accept axis. A FAR of 0 (accepting no different-person
# pair) has no place on a log axis, and with N different-person pairs the smallest nonzero FAR is 1/N; so
# points at 0 (and below 1e-4, which only runs of over 10,000 such pairs reach) are drawn on this edge.
FAR_FLOOR = 1e-4
ROC_BAND_PREFIX = "age gap "  # the legend label of each band's curve begins so


def predicted_vs_true_figure(true_ages, predicted, age_std=None):
    """A Figure of two panels: predicted against true age (with the MAE in the title; each face's
    predicted spread `age_std` as an error bar when given), and per age decade the MAE (bars) and the
    signed bias, predicted minus true (markers, with the standard deviation of the error in that decade as
    bars). `true_ages`, `predicted`, `age_std`: equal-length numbers (arrays, Series, CPU tensors)."""
    from matplotlib.figure import Figure

    true_ages, predicted = np.asarray(true_ages, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    errors = predicted - true_ages
    figure = Figure(figsize=(10, 4.5))
    scatter, bars = figure.subplots(1, 2)
    if age_std is None:
        scatter.scatter(true_ages, predicted, s=8, alpha=0.5)
    else:
        scatter.errorbar(
            true_ages,
            predicted,
            yerr=np.asarray(age_std, dtype=np.float64),
            fmt="o",
            markersize=3,
            alpha=0.5,
            elinewidth=0.6,
            label="predicted ± age_std",
        )
        scatter.legend(loc="upper left")
    scatter.plot([MIN_AGE, MAX_AGE], [MIN_AGE, MAX_AGE], color="grey", linewidth=1)
    scatter.set(
        xlabel="true age",
        ylabel="predicted age",
        xlim=(MIN_AGE, MAX_AGE),
        ylim=(MIN_AGE, MAX_AGE),
        title=f"MAE {np.abs(errors).mean():.2f} on {len(true_ages)} faces" if len(true_ages) else "no faces",
    )
    _draw_decades(bars, true_ages, errors)
    figure.tight_layout()
    return figure


def _draw_decades(bars, true_ages: np.ndarray, errors: np.ndarray) -> None:
    decades = age_decade(true_ages)
    present = np.unique(decades)
    labels = [decade_label(d) for d in present]
    bars.bar(labels, [np.abs(errors[decades == d]).mean() for d in present], color="C0", alpha=0.7, label="MAE")
    # Markers and error bars, not bars: the panel's patches stay one MAE bar per decade
    bars.errorbar(
        labels,
        [errors[decades == d].mean() for d in present],
        yerr=[errors[decades == d].std() for d in present],
        fmt="D",
        color="C3",
        capsize=3,
        label="bias ± sd of the error",
    )
    bars.axhline(0, color="grey", linewidth=0.8)
    bars.set(xlabel="true age", ylabel="years", title="MAE and bias (predicted - true) per decade")
    bars.tick_params(axis="x", labelrotation=45)
    if len(present):
        bars.legend(loc="best")


def roc_figure(scores, labels, gaps, threshold: float):
    """The ROC on a logarithmic false-accept axis (FAR_FLOOR..1): one curve for all pairs and one per
    age-gap band holding both same-person and different-person pairs (a band of one kind only is named in
    the legend without a curve), each with the point of `threshold` marked. `gaps`: each pair's age gap
    in years (None or NaN where unknown); labels: True for same-person pairs."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    bands = np.array([age_gap_band(_gap_or_nan(gap)) for gap in gaps], dtype=object)
    figure = Figure(figsize=(6.5, 5.5))
    axis = figure.subplots()
    groups = [("all pairs", np.ones(len(scores), dtype=bool))]
    groups += [(ROC_BAND_PREFIX + name, bands == name) for name, _, _ in AGE_GAP_BANDS]
    notes = []
    for colour, (name, members) in enumerate(groups):
        if not _has_both_classes(labels[members]):
            if members.any():
                notes.append(
                    Line2D([], [], linestyle="none", label=f"{name}: {members.sum()} pair(s) of one kind, no curve")
                )
            continue
        _draw_roc_curve(axis, scores[members], labels[members], threshold, name, f"C{colour}", main=colour == 0)
    negatives = int((~labels).sum())
    if negatives:
        # Left of 1/N nothing was measured: the curve there only repeats its value at FAR 0
        axis.axvline(
            max(1 / negatives, FAR_FLOOR),
            color="grey",
            linestyle=":",
            linewidth=1,
            label=f"1/{negatives}: smallest FAR measurable",
        )
    far_grid = np.logspace(np.log10(FAR_FLOOR), 0, 50)
    axis.plot(far_grid, far_grid, color="grey", linewidth=1, linestyle="--", label="chance")
    axis.set_xscale("log")
    axis.set(
        xlim=(FAR_FLOOR, 1),
        ylim=(0, 1.02),
        xlabel="false accept rate (different people accepted)",
        ylabel="true accept rate (same person accepted)",
        title=f"ROC over {len(scores)} pairs, threshold {threshold:g}",
    )
    axis.grid(True, which="major", alpha=0.3)
    handles, _ = axis.get_legend_handles_labels()
    axis.legend(handles=handles + notes, loc="lower right", fontsize="small")
    figure.tight_layout()
    return figure


def _draw_roc_curve(axis, scores, labels, threshold: float, name: str, colour: str, main: bool) -> None:
    far, tar, _ = array_metrics.roc_curve(scores, labels)
    auc = array_metrics.roc_auc(scores, labels)
    # Steps, not straight lines between points: at any FAR the curve shows the best TAR whose FAR does not
    # exceed it, as the summary's TAR@FAR figures count it (a line would claim rates no threshold gives)
    axis.plot(
        np.maximum(far, FAR_FLOOR),
        tar,
        drawstyle="steps-post",
        color=colour,
        linewidth=2 if main else 1.2,
        label=f"{name}: {len(scores)} pairs, AUC {auc:.3f}",
    )
    point_far, point_tar = array_metrics.rates_at(threshold, scores, labels)
    axis.plot(
        [max(point_far, FAR_FLOOR)],
        [point_tar],
        marker="o",
        markersize=8 if main else 5,
        markeredgecolor="black",
        color=colour,
        linestyle="none",
        # one legend entry for the threshold: the markers of the bands share its meaning
        label=f"threshold {threshold:g}: FAR {point_far:.3g}, TAR {point_tar:.3g}" if main else "_threshold",
    )


def similarity_histogram_figure(scores, labels, threshold: float):
    """Histograms of the same-person and of the different-person similarities on shared bins, each scaled
    to its own count (density) so a few same-person pairs stay visible beside many different-person ones,
    with the threshold as a vertical line."""
    from matplotlib.figure import Figure

    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    figure = Figure(figsize=(6.5, 4.5))
    axis = figure.subplots()
    low = min(scores.min(initial=threshold), threshold)
    high = max(scores.max(initial=threshold), threshold)
    bins = np.linspace(low, high if high > low else low + 1e-6, 41).tolist()  # a list: what matplotlib's stubs take
    for members, name, colour in ((labels, "same person", "C2"), (~labels, "different people", "C3")):
        if members.any():
            axis.hist(
                scores[members], bins=bins, density=True, alpha=0.55, color=colour, label=f"{name} ({members.sum()})"
            )
    axis.axvline(threshold, color="black", linestyle="--", linewidth=1.2, label=f"threshold {threshold:g}")
    axis.set(xlabel="cosine similarity", ylabel="density", title=f"Similarities of {len(scores)} pairs")
    axis.legend(loc="best", fontsize="small")
    figure.tight_layout()
    return figure


def retrieval_by_gap_figure(gaps, mean_average_precision, rank_1, unit: str, chance_rank_1=None):
    """Cross-age retrieval against the gap between the query and gallery groups: MAP and rank-1 accuracy
    (0..1) at each gap, in `unit`s ("year" or "age"), and the rank-1 of a random ranking (dotted) when
    given. None values (no scored query) are left out."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4.5))
    axis = figure.subplots()
    lines = [(mean_average_precision, "MAP", "o", "-"), (rank_1, "rank-1 accuracy", "s", "-")]
    if chance_rank_1 is not None:  # a rank-1 of 0.9 means little when chance alone gives 0.5
        lines.append((chance_rank_1, "rank-1 by chance", "", ":"))
    for values, name, marker, style in lines:
        points = [(gap, value) for gap, value in zip(gaps, values) if value is not None]
        axis.plot(
            [gap for gap, _ in points], [value for _, value in points], marker=marker, linestyle=style, label=name
        )
    axis.set(
        xlabel="gap between the groups' middle " + ("years" if unit == "year" else "ages (years)"),
        ylabel="score",
        ylim=(0, 1.02),
        title="Cross-age retrieval as the gap grows",
    )
    axis.grid(alpha=0.3)
    axis.legend(loc="best")
    figure.tight_layout()
    return figure


def _gap_or_nan(gap) -> float:
    return float("nan") if gap is None else float(gap)


def _has_both_classes(labels: np.ndarray) -> bool:
    return bool(labels.any() and (~labels).any())
