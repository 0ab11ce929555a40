"""Measure the age model and the verification, and calibrate the verification threshold.

Every run writes OUT/summary.json beside its plots and tables (leakage prints it only).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

# No torch, Lightning or facenet-pytorch here: --help and a bad option are answered before those are imported
# (seconds on a cold start); the functions that need them import them.
import numpy as np
import pandas as pd
from tqdm import tqdm

from config import Config, ConfigArgumentParser, add_config_arguments, help_epilog, parse_config
from face_match_age.error_messages import out_of_memory_message, print_error
from face_match_age.evaluation import array_metrics, retrieval
from face_match_age.evaluation.age_decades import age_decade, decade_label
from face_match_age.evaluation.calibration import calibrate, fallback_note, minimum_negatives
from face_match_age.evaluation.figures import (
    predicted_vs_true_figure,
    retrieval_by_gap_figure,
    roc_figure,
    similarity_histogram_figure,
)
from face_match_age.exit_codes import ExitCode
from face_match_age.files.column_mapping import LABEL_COLUMNS, PAIR_COLUMNS, add_columns_option
from face_match_age.files.csv_tables import csv_line, read_table
from face_match_age.files.output_files import (
    OutputError,
    disk_full_message,
    is_disk_full,
    prepare_out_dir,
    write_atomically,
    write_json,
)
from face_match_age.match_rule import AGE_GAP_BANDS, MatchRule, age_gap_band

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from loader import FaceAgeDataset

TARGET_FARS = (1e-2, 1e-3)
FIGURE_DPI = 120  # with the figures' fixed inches, a fixed PNG size (e.g. 6.5 x 5.5 in: 780 x 660 pixels)
EXIT_INTERRUPTED = ExitCode.INTERRUPTED  # the shell's code for a command ended by Ctrl-C (128 + SIGINT)
LABEL_NAMES = {1: "1 (same person)", 0: "0 (different people)"}
NETWORK_OPTIONS = (
    "device",
    "inference_precision",
    "channels_last",
    "compile_networks",
    "inference_batch_size",
)  # how FaceAnalyzer runs its networks


class EvaluationError(RuntimeError):
    """Something to fix before an evaluation can run."""


# --- age ---------------------------------------------------------------------------------------------


def evaluate_age(
    images: Path,
    csv_path: Path,
    checkpoint: Path,
    out_dir: Path,
    device: str = "auto",
    batch_size: int = 64,
    columns: dict[str, str] | None = None,
    train_csv: Path | None = None,
) -> dict:
    """Predict every face of a folder + CSV (e.g. data_prep's val split) and summarise the errors, beside the
    baseline of predicting the median age of `train_csv` (else of the evaluated set itself) for every face.
    `columns` maps name and age to the CSV's own column names (--columns)."""
    import torch
    from torch.utils.data import DataLoader

    from face_match_age.device import resolve_device
    from face_match_age.network.age_network import load_age_model
    from face_match_age.reports.evaluation_sheets import save_age_error_sheet
    from loader import FaceAgeDataset

    model = load_age_model(checkpoint, resolve_device(device))
    # Faces at the size the model was trained on, where its checkpoint says (train.py's do): another size
    # would measure a model other than the one trained.
    dataset = FaceAgeDataset(images, csv_path, model.trained_img_size or Config().img_size, columns=columns)
    reference = _baseline_reference(train_csv, dataset)
    out_dir = prepare_out_dir(out_dir)  # only once the inputs are known to be usable
    rows = []
    with torch.inference_mode(), tqdm(total=len(dataset), desc="faces", unit="face") as progress:
        for faces, ages, indices in DataLoader(dataset, batch_size=batch_size):
            progress.update(len(ages))
            prediction = model.predict(faces.to(next(model.parameters()).device))
            for i, age, predicted, spread, (low, high) in zip(
                indices.tolist(),
                ages.tolist(),
                prediction["age"].cpu().tolist(),
                prediction["age_std"].cpu().tolist(),
                prediction["age_interval"].cpu().tolist(),
            ):
                rows.append(
                    {
                        "name": dataset.labels.at[i, "name"],
                        "age": age,
                        "predicted": round(predicted, 2),
                        "age_std": round(spread, 2),
                        "interval_low": low,
                        "interval_high": high,
                    }
                )
    predictions = pd.DataFrame(rows)
    files = {
        "predictions": write_atomically(out_dir / "predictions.csv", lambda tmp: predictions.to_csv(tmp, index=False))
    }
    summary = age_summary(predictions, *reference) | {
        "checkpoint": str(checkpoint),
        "images": str(images),
        "csv": str(csv_path),
    }
    files["predicted_vs_true"] = _save_figure(
        predicted_vs_true_figure(predictions["age"], predictions["predicted"], predictions["age_std"]),
        out_dir / "predicted_vs_true.png",
    )
    files["largest_age_errors"] = save_age_error_sheet(predictions, images, out_dir / "largest_age_errors.jpg")
    _write_summary(out_dir, summary, files)
    return summary


def _baseline_reference(train_csv: Path | None, dataset: FaceAgeDataset) -> tuple[pd.Series, str]:
    """The ages whose median is the baseline's guess, and where they come from, as summary.json says it."""
    if train_csv is None:
        return dataset.labels["age"], "the evaluated set itself (no training CSV given: an optimistic baseline)"
    ages = read_table(train_csv, ("age",), EvaluationError, "training labels file", numbers=("age",))["age"]
    return ages.dropna(), f"the training labels {train_csv}"


def age_summary(predictions: pd.DataFrame, reference_ages=None, reference: str = "the evaluated set itself") -> dict:
    """MAE, CS@5, interval coverage, and MAE and signed bias (predicted minus true) per decade; beside MAE, the
    baseline: the MAE and CS@5 of predicting the median of `reference_ages` (default: the true ages) for every
    face, which a model must beat to have learned anything from the faces."""
    error = predictions["predicted"] - predictions["age"]
    inside = (predictions["interval_low"] <= predictions["age"]) & (predictions["age"] <= predictions["interval_high"])
    decades = {}
    decade: Any  # an int: pandas-stubs types the keys of a grouping by an array as tuples
    for decade, group in predictions.groupby(age_decade(predictions["age"])):
        group_error = group["predicted"] - group["age"]
        decades[decade_label(decade)] = {
            "faces": len(group),
            "mae": round(float(group_error.abs().mean()), 3),
            "bias": round(float(group_error.mean()), 3),
        }
    guess = array_metrics.median_age_guess(
        predictions["age"] if reference_ages is None else reference_ages, predictions["age"]
    )
    return {
        "faces": len(predictions),
        "mae": round(array_metrics.mae(predictions["predicted"], predictions["age"]), 3),
        "baseline": {
            "what": f"predicting the median age of {reference} for every face",
            "median_age": guess["median_age"],
            "mae": round(guess["mae"], 3),
            "cs5": round(guess["cs5"], 4),
        },
        "cs5": round(array_metrics.cumulative_score(predictions["predicted"], predictions["age"]), 4),
        "bias": round(float(error.mean()), 3),
        "interval_coverage": round(float(inside.mean()), 4),
        "interval": "central 90% of the predicted age distribution",
        "per_decade": decades,
    }


# --- verification --------------------------------------------------------------------------------------


def evaluate_verification(
    pairs_csv: Path,
    out_dir: Path,
    checkpoint: Path | None,
    config: Config,
    device: str = "auto",
    calibrate_far: float | None = None,
    columns: dict[str, str] | None = None,
) -> dict:
    """Score every labelled pair with infer.py's batch path and summarise, overall and by age gap.
    The figures use the similarities as results.jsonl holds them, exact (only its tables round them); they are
    written to OUT/similarities.csv. Pairs of one class only raise EvaluationError."""
    from face_match_age.inference.analyzer import FaceAnalyzer, verification_weights_identity
    from face_match_age.inference.batch import MANIFEST, RESULTS_CSV, RESULTS_JSONL, run_batch
    from face_match_age.inference.pair_specs import read_pairs_csv

    table = _labelled_pairs(pairs_csv, columns)
    config = config.replace(best_checkpoint=checkpoint) if checkpoint else config
    make_analyzer = functools.partial(FaceAnalyzer, config, age_checkpoint=checkpoint, with_age=checkpoint is not None)
    pairs = read_pairs_csv(pairs_csv, columns)
    run_batch(
        pairs,
        out_dir,
        make_analyzer,
        MatchRule(config.verification_threshold),
        config=config,
        device=device,
        record={"script": "evaluate.py verify", "pairs": str(pairs_csv)},
        settings={"verify_weights": verification_weights_identity(None)},  # a resumed run: the same weights
    )
    results = _joined_results(out_dir / "results.jsonl", table)
    write_atomically(
        out_dir / "similarities.csv",
        lambda tmp: (
            results[["pair_index", "label", "score", "gap"]]
            .rename(columns={"score": "similarity"})
            .to_csv(tmp, index=False, float_format="%.9g")
        ),
    )
    scored = results[results["score"].notna()]
    _require_both_classes(
        scored["label"],
        "among the pairs where both faces were found",
        f"; {len(results) - len(scored)} pairs lacked a face "
        f"({'; '.join(results.loc[results['score'].isna(), 'error'].head(3))})",
    )
    summary = verification_summary(results, config.verification_threshold)
    summary |= {
        "pairs_csv": str(pairs_csv),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "similarities": str(out_dir / "similarities.csv"),
    }
    files = {  # run_batch's files (infer.py's batch output), then this evaluation's
        "results": out_dir / RESULTS_JSONL,
        "results_table": out_dir / RESULTS_CSV,
        "batch": out_dir / MANIFEST,
        "config": out_dir / "config.json",
        "similarities": out_dir / "similarities.csv",
    }
    files |= _verification_pictures(results, pairs, config.verification_threshold, out_dir)
    if calibrate_far is not None:
        record = calibrate(
            scored["score"],
            scored["label"].astype(bool),
            scored["gap"],
            calibrate_far,
            fallback_threshold=config.verification_threshold,
        )
        if note := fallback_note(record):
            print(note, file=sys.stderr)
            summary["calibration_note"] = note
        files["calibration"] = write_json(out_dir / "calibration.json", record)
        summary["calibration"] = str(out_dir / "calibration.json")
    _write_summary(out_dir, summary, files)
    return summary


def _verification_pictures(results: pd.DataFrame, pairs, threshold: float, out_dir: Path) -> dict[str, Path]:
    """roc.png and similarity_histogram.png of the scored pairs, and the sheets of the worst pairs."""
    from face_match_age.reports.evaluation_sheets import save_worst_pair_sheets

    scored = results[results["score"].notna()]
    labels = scored["label"].astype(bool)
    files = {
        "roc": _save_figure(roc_figure(scored["score"], labels, scored["gap"], threshold), out_dir / "roc.png"),
        "similarity_histogram": _save_figure(
            similarity_histogram_figure(scored["score"], labels, threshold), out_dir / "similarity_histogram.png"
        ),
    }
    by_index = {pair.index: pair for pair in pairs}
    photos = pd.DataFrame(
        {
            "path1": [by_index[i].path1 for i in results["pair_index"]],
            "path2": [by_index[i].path2 for i in results["pair_index"]],
        },
        index=results.index,
    )
    return files | save_worst_pair_sheets(results.join(photos), threshold, out_dir)


def _labelled_pairs(pairs_csv: Path, columns: dict[str, str] | None = None) -> pd.DataFrame:
    table = read_table(
        pairs_csv,
        ("img1", "img2", "label"),
        EvaluationError,
        "pairs file",
        numbers=("label", "age1", "age2"),
        columns=columns,
    )
    bad = table.index[~table["label"].isin([0, 1])]
    if len(bad):
        lines = ", ".join(f"line {csv_line(i)}: {table.at[i, 'label']!s}" for i in bad[:5])
        raise EvaluationError(f"{pairs_csv}: labels must be 1 (same person) or 0 (different); {lines}")
    _require_both_classes(table["label"], f"in {pairs_csv}")
    return table


def _require_both_classes(labels: pd.Series, where: str, why: str = "") -> None:
    """ROC AUC, EER, TAR at a FAR and a calibrated threshold all compare same-person with different-person
    pairs: with one kind only there is nothing to measure, and a calibration would hold no threshold."""
    present = sorted({int(label) for label in labels})
    if len(present) < 2:
        only = f"all {len(labels)} pairs are labelled {LABEL_NAMES[present[0]]}" if present else "no pair is left"
        missing = " and ".join(LABEL_NAMES[label] for label in (1, 0) if label not in present)
        raise EvaluationError(
            f"{only} {where}{why}: verification figures and a calibration need pairs of both kinds; "
            f"add pairs labelled {missing}"
        )


GAP_FROM_CSV = "age1 and age2 of the pairs CSV"
GAP_FROM_MODEL = "ages predicted by the age model (--ckpt)"
NO_GAP = "no ages (the pairs CSV has no age1 and age2 there, and no --ckpt predicts them)"


def _joined_results(results_path: Path, table: pd.DataFrame) -> pd.DataFrame:
    """One row per pair: label, score (None if a face was missing), age gap (given ages, else predicted,
    else None) and where that gap came from (gap_from)."""
    rows = [json.loads(line) for line in results_path.read_text().splitlines()]
    joined = []
    for row in rows:
        given = table.iloc[row["pair_index"]]
        if {"age1", "age2"} <= set(table.columns) and pd.notna(given["age1"]) and pd.notna(given["age2"]):
            gap, gap_from = abs(float(given["age1"]) - float(given["age2"])), GAP_FROM_CSV
        elif row["age_gap"] is not None:
            gap, gap_from = row["age_gap"], GAP_FROM_MODEL
        else:
            gap, gap_from = None, NO_GAP
        verification = row["verification"]
        joined.append(
            {
                "pair_index": row["pair_index"],
                "label": int(given["label"]),
                "score": verification["similarity"] if verification else None,
                "gap": gap,
                "gap_from": gap_from,
                "error": row["error"],
                # for the sheets of the worst pairs: where each chosen face is, and its predicted age
                **{f"box{n}": (row.get(f"face_{n}") or {}).get("box") for n in (1, 2)},
                **{f"age{n}": (row.get(f"face_{n}") or {}).get("age") for n in (1, 2)},
            }
        )
    return pd.DataFrame(joined)


def verification_summary(results: pd.DataFrame, threshold: float) -> dict:
    scored = results[results["score"].notna()]
    failures = results[results["score"].isna()]
    summary = {
        "pairs": len(results),
        "scored_pairs": len(scored),
        "pairs_without_a_face": len(failures),
        "failure_examples": failures["error"].head(5).tolist(),
        "failures": failures["error"].tolist(),
        **_roc_figures(scored["score"].to_numpy(float), scored["label"].to_numpy(bool), threshold),
    }
    bands = {}
    for name, _, _ in AGE_GAP_BANDS:
        in_band = scored[[age_gap_band(g) == name for g in scored["gap"]]]
        bands[name] = {"pairs": len(in_band)} | (
            _roc_figures(in_band["score"].to_numpy(float), in_band["label"].to_numpy(bool), threshold)
            if len(in_band)
            else {}
        )
    summary["by_age_gap"] = bands
    # how many scored pairs took their gap from where: the bands mean different things for given and predicted ages
    summary["age_gap_from"] = {source: int(count) for source, count in scored["gap_from"].value_counts().items()}
    if (scored["gap_from"] == NO_GAP).all():
        summary["by_age_gap"] = None
        summary["by_age_gap_unavailable"] = (
            f"{NO_GAP}: add age1 and age2 columns to the pairs CSV, or give --ckpt to predict the ages"
        )
    return summary


def _roc_figures(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    both = labels.any() and (~labels).any()
    best_threshold, best_accuracy = (
        array_metrics.best_accuracy_threshold(scores, labels) if len(scores) else (None, None)
    )
    figures: dict[str, float | str | None] = {
        "roc_auc": array_metrics.roc_auc(scores, labels) if both else None,
        "eer": array_metrics.equal_error_rate(scores, labels) if both else None,
        "threshold": threshold,
        "accuracy_at_threshold": array_metrics.accuracy_at(threshold, scores, labels),
        "best_threshold": best_threshold,
        "best_accuracy": best_accuracy,
    }
    # TAR at a FAR is measured only on enough different-person pairs (calibration's rule): on fewer it is
    # TAR at FAR 0, whatever the label says
    negatives = int((~labels).sum())
    figures |= {"same_person_pairs": int(labels.sum()), "different_person_pairs": negatives}
    for far in TARGET_FARS:
        measurable = both and negatives >= minimum_negatives(far)
        figures[f"tar_at_far_{far:g}"] = array_metrics.tar_at_far(scores, labels, far) if measurable else None
        if both and not measurable:
            figures[f"tar_at_far_{far:g}_unavailable"] = (
                f"only {negatives} different-person pairs; at least {minimum_negatives(far)} measure FAR {far:g}"
            )
    return figures


# --- leakage -------------------------------------------------------------------------------------------


def leakage(train_csv: Path, val_csv: Path) -> dict:
    """People present in both sets, by the identity column. Without identities (UTKFace, a CSV without
    them) nothing can be checked: EvaluationError says so rather than reporting 0 shared people."""
    from face_match_age.preparation.splits import shared_identities

    train, val = (
        read_table(path, (), EvaluationError, "labels file", dtype={"identity": str}) for path in (train_csv, val_csv)
    )
    for path, table in ((train_csv, train), (val_csv, val)):
        if "identity" not in table.columns or not _known_identity(table).any():
            raise EvaluationError(
                f"cannot check for people in both sets: {path} has no identities (no identity "
                "column, or every value empty), so a shared person cannot be recognised. A split "
                "of such data is random and may hold the same person on both sides"
            )
    shared = shared_identities(train, val)
    in_val = val["identity"].isin(shared)
    return {
        "shared_identities": len(shared),
        "examples": shared[:10],
        "val_images_of_shared_people": int(in_val.sum()),
        "val_images": len(val),
        "train_identities": int(train["identity"].nunique()),
        "val_identities": int(val["identity"].nunique()),
        # rows without an identity cannot be checked: say how many, so "0 shared" is not read as covering them
        "train_images_without_identity": int((~_known_identity(train)).sum()),
        "val_images_without_identity": int((~_known_identity(val)).sum()),
    }


def _known_identity(table: pd.DataFrame) -> pd.Series:
    return table["identity"].notna() & (table["identity"].astype(str).str.strip() != "")


# --- retrieval -----------------------------------------------------------------------------------------

RETRIEVAL_PERIOD_YEARS = 3  # CACD's periods: 2004-2006, 2007-2009, 2010-2012 (then 2013)


def evaluate_retrieval(
    csv_path: Path,
    images: Path,
    out_dir: Path,
    config: Config,
    device: str = "auto",
    groups: str | None = None,
    columns: dict[str, str] | None = None,
) -> dict:
    """Cross-age retrieval (CACD's protocol): each photo of a later group queries the photos of every
    earlier group; MAP, rank-1 and rank-5 per pair of groups and per gap between the groups' middles.
    Each photo is detected and embedded once; photos without a face are counted and listed."""
    table, by = _retrieval_table(csv_path, columns)
    chosen = retrieval.parse_groups(groups) if groups else _default_groups(table[by], by)
    table["group"] = retrieval.group_of(table[by], chosen)
    outside = int((table["group"] < 0).sum())
    table = table[table["group"] >= 0].reset_index(drop=True)
    table["person"] = pd.factorize(table["identity"].astype(str))[0]  # integers compare faster than strings
    if table.empty:
        raise EvaluationError(f"{csv_path}: no row's {by} falls in the groups {', '.join(g.label for g in chosen)}")
    _require_two_people(table, csv_path)
    if not images.is_dir():
        raise EvaluationError(f"images folder {images} does not exist; --images names the folder of the CSV's photos")
    out_dir = prepare_out_dir(out_dir)
    photos = list(dict.fromkeys(table["name"]))  # a photo listed twice is embedded once
    embeddings, failures = _embed_photos(images, photos, config, device)
    row_of_photo = {name: row for row, name in enumerate(photos)}
    table["photo_row"] = table["name"].map(row_of_photo)
    if len(failures) == len(photos):
        examples = "; ".join(list(failures.values())[:3])
        raise EvaluationError(f"no face found in any of the {len(photos)} photos ({examples})")
    table = table[~table["name"].isin(list(failures))]
    pairs, by_gap = _retrieval_pairs(table, embeddings, chosen)
    if not any(pair["queries"] for pair in pairs):
        raise EvaluationError(
            f"{csv_path}: no query has another photo of its person and a photo of someone else in an earlier "
            "group's gallery (with a face found), so MAP and rank-k are undefined; retrieval needs several people "
            "photographed in more than one group"
        )
    summary = {
        "csv": str(csv_path),
        "images": str(images),
        "grouped_by": by,
        "protocol": "each photo of a later group queries the photos of every earlier group, ranked by cosine "
        "similarity; a query whose identity is not in the gallery, or whose gallery holds nobody else (any "
        "ranking would score it 1.0), is skipped; chance_rank_k: a random ranking's rank-k",
        "groups": [{"group": g.label, "photos": int((table["group"] == i).sum())} for i, g in enumerate(chosen)],
        "photos": len(photos),
        "rows_outside_groups": outside,
        "photos_without_a_face": len(failures),
        "failures": [{"photo": name, "error": error} for name, error in failures.items()],
        "pairs": pairs,
        "by_gap": by_gap,
    }
    figure = retrieval_by_gap_figure(
        [row["gap"] for row in by_gap],
        [row["map"] for row in by_gap],
        [row["rank_1"] for row in by_gap],
        by,
        [row["chance_rank_1"] for row in by_gap],
    )
    _write_summary(out_dir, summary, {"retrieval_by_gap": _save_figure(figure, out_dir / "retrieval_by_gap.png")})
    return summary


def _retrieval_table(csv_path: Path, columns: dict[str, str] | None = None) -> tuple[pd.DataFrame, str]:
    """The rows with an identity, and the column that groups them: year when present, else age."""
    table = read_table(
        csv_path,
        ("name", "identity"),
        EvaluationError,
        "labels file",
        numbers=("year", "age"),
        columns=columns,
        dtype={"name": str},
    )
    by = next((column for column in ("year", "age") if column in table.columns), None)
    if by is None:
        raise EvaluationError(f"{csv_path} needs a year or an age column to group photos by")
    table = table[_known_identity(table) & table[by].notna()].reset_index(drop=True)
    if table.empty:
        raise EvaluationError(f"{csv_path} has no row with both an identity and a {by}")
    return table, by


def _require_two_people(table: pd.DataFrame, csv_path: Path) -> None:
    """With one person, every query's gallery holds only that person: MAP and rank-k would read 1.0 for any
    embedding at all."""
    if table["person"].nunique() < 2:
        raise EvaluationError(
            f"{csv_path}: every photo in the groups is of one person ({table['identity'].iloc[0]}); retrieval "
            "ranks a person's photos among other people's, so it needs at least two identities: add photos of "
            "other people"
        )


def _default_groups(values: pd.Series, by: str) -> list[retrieval.Group]:
    """Years: periods of RETRIEVAL_PERIOD_YEARS from the earliest; ages: the decades present."""
    if by == "year":
        return retrieval.periods(values, RETRIEVAL_PERIOD_YEARS)
    return [retrieval.Group(*map(int, decade_label(d).split("-"))) for d in np.unique(age_decade(values))]


def _embed_photos(images: Path, photos: list[str], config: Config, device: str) -> tuple[np.ndarray, dict]:
    """(photos x 512 unit embeddings, zero rows where no face was found; {photo: why} for those)."""
    from face_match_age.inference.analyzer import FaceAnalyzer

    analyzer = FaceAnalyzer(config, with_age=False, device=device)
    from face_match_age.network.age_network import EMBEDDING_DIM

    embeddings, failures = np.zeros((len(photos), EMBEDDING_DIM), dtype=np.float32), {}
    analyses = analyzer.analyze_many([images / name for name in photos], names=photos)
    for row, analysis in enumerate(tqdm(analyses, total=len(photos), desc="photos", unit="photo")):
        if analysis.face is None:
            failures[photos[row]] = analysis.error
        else:
            embeddings[row] = analysis.face.embedding
    return embeddings, failures


def _retrieval_pairs(table: pd.DataFrame, embeddings: np.ndarray, groups: list) -> tuple[list[dict], list[dict]]:
    """One summary per (later query group, earlier gallery group), and the queries of equal gaps pooled."""
    pairs: list[dict] = []
    scores_by_gap: dict[float, list] = {}
    for query_group in range(len(groups)):
        for gallery_group in range(query_group):
            queries, gallery = (table[table["group"] == g] for g in (query_group, gallery_group))
            if queries.empty or gallery.empty:
                continue
            scores = retrieval.score_queries(
                embeddings[queries["photo_row"]],
                queries["person"],
                embeddings[gallery["photo_row"]],
                gallery["person"],
            )
            gap = groups[query_group].middle - groups[gallery_group].middle
            scores_by_gap.setdefault(gap, []).append(scores)
            pairs.append(
                {
                    "query_group": groups[query_group].label,
                    "gallery_group": groups[gallery_group].label,
                    "gap": gap,
                    "gallery": len(gallery),
                }
                | retrieval.retrieval_summary(scores)
            )
    by_gap = [
        {"gap": gap, "pairs": len(scores)} | retrieval.retrieval_summary(retrieval.concatenate(scores))
        for gap, scores in sorted(scores_by_gap.items())
    ]
    return pairs, by_gap


# --- shared --------------------------------------------------------------------------------------------


def _save_figure(figure: Figure, path: Path) -> Path:
    # A bare Figure renders to PNG without pyplot: no display needed, no global backend changed. No
    # bbox_inches="tight": the PNG keeps the figure's fixed size whatever its labels hold.
    figure.tight_layout()
    return write_atomically(path, lambda tmp: figure.savefig(tmp, format="png", dpi=FIGURE_DPI))


def _write_summary(out_dir: Path, summary: dict, files: dict[str, Path]) -> None:
    """summary.json, listing every file the run wrote (itself included) by what each holds."""
    summary["files"] = {name: str(path) for name, path in files.items()} | {"summary": str(out_dir / "summary.json")}
    write_json(out_dir / "summary.json", summary)


AGE_EXAMPLES = (
    "uv run python evaluate.py age --data-dir data/IMDB --out eval/age    # data_prep.py's val split",
    (
        "uv run python evaluate.py age --images data/IMDB/val_images --csv data/IMDB/val.csv --ckpt checkpoints/best.ckpt "
        "--out eval/age"
    ),
)
VERIFY_EXAMPLES = ("uv run python evaluate.py verify --pairs pairs.csv --out eval/verify [--ckpt PATH] [--calibrate]",)
RETRIEVE_EXAMPLES = (
    "uv run python evaluate.py retrieve --csv data/CACD/val.csv --images data/CACD/val_images --out eval/retrieve  # by age",
    (
        "uv run python evaluate.py retrieve --csv cacd_years.csv --images CACD2000 --out eval/retrieve "
        "--groups 2004-2006,2007-2009,2010-2012,2013"
    ),
)
LEAKAGE_EXAMPLES = (
    "uv run python evaluate.py leakage --data-dir data/IMDB                # its train.csv against its val.csv",
    "uv run python evaluate.py leakage --train-csv data/IMDB/train.csv --val-csv data/IMDB/val.csv",
)
EXIT_CODES = {
    ExitCode.OK: "done",
    ExitCode.USAGE: "bad command line, or a --device or --precision this machine cannot run",
    ExitCode.INPUT: "an unusable CSV, folder or photo (the message says what)",
    ExitCode.OUTPUT: "--out cannot be written (a full disk too), or holds another run's results",
    ExitCode.MODEL: "the --ckpt model or the verification weights cannot be loaded",
    ExitCode.OUT_OF_MEMORY: "out of memory on the device (lower --inference-batch-size)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); verify resumes when run again",
}
AGE_EXIT_CODES = EXIT_CODES | {EXIT_INTERRUPTED: "interrupted (Ctrl-C); nothing half-written is kept"}
LEAKAGE_EXIT_CODES = {
    ExitCode.OK: "no person is in both sets",
    ExitCode.INPUT: "a labels CSV missing or unreadable, or without identities to check",
    ExitCode.CHECK_FAILED: "people found in both sets",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


def build_parser() -> ConfigArgumentParser:
    parser = ConfigArgumentParser(
        description=__doc__,
        epilog=help_epilog(
            AGE_EXAMPLES + VERIFY_EXAMPLES + RETRIEVE_EXAMPLES + LEAKAGE_EXAMPLES,
            EXIT_CODES | {ExitCode.CHECK_FAILED: LEAKAGE_EXIT_CODES[ExitCode.CHECK_FAILED]},
            notes="Each command's options: evaluate.py age --help (verify, retrieve, leakage alike).",
        ),
    )
    commands = parser.add_commands(dest="command", required=True, metavar="{age,verify,retrieve,leakage}")
    _add_age_command(commands)
    _add_verify_command(commands)
    _add_retrieve_command(commands)
    leak = commands.add(
        "leakage",
        help="people present in both the train and the val CSV",
        description="People present in both the train and the val CSV, by the identity column.",
        epilog=help_epilog(LEAKAGE_EXAMPLES, LEAKAGE_EXIT_CODES),
    )
    add_config_arguments(leak, ["dataset_dir", "train_csv", "val_csv"])
    return parser


def _add_age_command(commands) -> None:
    age = commands.add(
        "age",
        help="MAE, CS@5, per-decade bias and interval coverage on a folder + CSV",
        description="MAE, CS@5, per-decade bias and interval coverage of the age model on a folder of face crops\n"
        "and its labels CSV; writes OUT/predictions.csv, predicted_vs_true.png, largest_age_errors.jpg and\n"
        "summary.json.",
        epilog=help_epilog(AGE_EXAMPLES, AGE_EXIT_CODES),
    )
    data = age.group("data")
    data.add_argument(
        "--images", type=Path, help="folder of face crops (default: --data-dir's val_images, else data/IMDB/val_images)"
    )
    data.add_argument(
        "--csv",
        type=Path,
        help="labels of those crops, columns name, age (default: --data-dir's val.csv, else data/IMDB/val.csv)",
    )
    data.add_argument(
        "--train-csv",
        type=Path,
        help="training labels: the baseline predicts their median age (default: --data-dir's train.csv, else the "
        "evaluated set's own median)",
    )
    add_columns_option(data, LABEL_COLUMNS, "labels CSV", "name=file,age=years")
    age.group("output").add_argument("--out", type=Path, required=True, help="folder for the results")
    add_config_arguments(age, ["dataset_dir", "best_checkpoint", "device", "inference_batch_size"])


def _add_verify_command(commands) -> None:
    verify = commands.add(
        "verify",
        help="ROC AUC, EER, TAR at FAR, by age gap; --calibrate writes thresholds",
        description="ROC AUC, EER, TAR at FAR and accuracy of the verification on labelled pairs, overall and by\n"
        "age gap; --calibrate writes a threshold per age gap for infer.py --calibration. Writes OUT/roc.png,\n"
        "similarity_histogram.png, worst_false_accepts.jpg, worst_false_rejects.jpg and summary.json.",
        epilog=help_epilog(VERIFY_EXAMPLES, EXIT_CODES),
    )
    data, model = verify.group("data"), verify.group("model")
    data.add_argument(
        "--pairs", type=Path, required=True, help="CSV: img1, img2, label (1 same, 0 different), optionally age1, age2"
    )
    add_columns_option(data, PAIR_COLUMNS, "pairs CSV", "img1=file_a,img2=file_b,label=same")
    model.add_argument("--ckpt", type=Path, help="age model, for predicted age gaps (default: none, use age1/age2)")
    model.add_argument("--calibrate", action="store_true", help="write OUT/calibration.json")
    model.add_argument("--target-far", type=float, default=1e-2, help="false-accept rate the calibration aims at")
    verify.group("output").add_argument(
        "--out", type=Path, required=True, help="folder for the results; run again into it to resume"
    )
    add_config_arguments(verify, ["verification_threshold", *NETWORK_OPTIONS])


def _add_retrieve_command(commands) -> None:
    retrieve = commands.add(
        "retrieve",
        help="cross-age retrieval: MAP, rank-1, rank-5 per pair of year or age groups",
        description="Cross-age retrieval, as CACD's protocol: each photo of a later year (or age) group queries the\n"
        "photos of every earlier group, ranked by cosine similarity of VGGFace2 embeddings; reports MAP,\n"
        "rank-1 and rank-5 per pair of groups and as the gap between groups grows. Writes OUT/summary.json\n"
        "and retrieval_by_gap.png.",
        epilog=help_epilog(RETRIEVE_EXAMPLES, AGE_EXIT_CODES),
    )
    data = retrieve.group("data")
    data.add_argument(
        "--csv", type=Path, required=True, help="labels: columns name, identity, and year (else age) of each photo"
    )
    data.add_argument("--images", type=Path, required=True, help="folder holding the photos the CSV names")
    add_columns_option(data, LABEL_COLUMNS, "labels CSV", "name=file,identity=person")
    data.add_argument(
        "--groups",
        help="comma-separated LOW-HIGH ranges of the year (or age), e.g. 2004-2006,2007-2009,2010-2012 "
        f"(default: with a year column, periods of {RETRIEVAL_PERIOD_YEARS} years from the earliest; else age "
        "decades)",
    )
    retrieve.group("output").add_argument("--out", type=Path, required=True, help="folder for the results")
    add_config_arguments(retrieve, NETWORK_OPTIONS)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, config = parse_config(parser, argv)
    if missing := _missing_input(args, config):  # before importing torch: an instant answer
        print_error(missing)
        return ExitCode.INPUT
    import torch

    from face_match_age.detection.imaging import ImageLoadError
    from face_match_age.device import DeviceUnavailableError, resolve_device, resolve_inference_precision
    from face_match_age.files.embedding_store import StoreError
    from face_match_age.inference.batch import BatchInterrupted
    from face_match_age.inference.pair_specs import InputError
    from face_match_age.network.age_network import CheckpointError
    from face_match_age.network.weights import PretrainedWeightsError
    from loader import LabelsError

    if args.command != "leakage":  # resolved before any model loads
        try:
            device = resolve_device(config.device)
            if args.command != "age":  # FaceAnalyzer's commands; `age` runs the age model at float32
                precision = resolve_inference_precision(config.inference_precision, device)
                config = config.replace(inference_precision=precision)
        except DeviceUnavailableError as error:  # one line, not the usage text
            print_error(error)
            return ExitCode.USAGE
        except ValueError as error:
            parser.error(str(error))
    try:
        if args.command == "age":
            images, labels = args.images or config.val_dir, args.csv or config.val_csv
            train_csv = args.train_csv or (config.train_csv if config.dataset_dir is not None else None)
            summary = evaluate_age(
                images,
                labels,
                config.best_checkpoint,
                args.out,
                config.device,
                config.inference_batch_size,
                args.columns,
                train_csv=train_csv,
            )
        elif args.command == "verify":
            summary = evaluate_verification(
                args.pairs,
                args.out,
                args.ckpt,
                config,
                config.device,
                args.target_far if args.calibrate else None,
                args.columns,
            )
        elif args.command == "retrieve":
            summary = evaluate_retrieval(
                args.csv, args.images, args.out, config, config.device, args.groups, args.columns
            )
        else:
            summary = leakage(config.train_csv, config.val_csv)
    except OutputError as error:
        print_error(disk_full_message(error.target, "another --out") if is_disk_full(error) else error)
        return ExitCode.OUTPUT
    except (CheckpointError, PretrainedWeightsError) as error:
        print_error(error)
        return ExitCode.MODEL
    except (EvaluationError, InputError, LabelsError, ImageLoadError, StoreError, ValueError) as error:
        print_error(error)
        return ExitCode.INPUT
    except torch.OutOfMemoryError as error:  # torch.cuda.OutOfMemoryError too: a subclass
        lower = f"lower --inference-batch-size (now {config.inference_batch_size})"
        print_error(out_of_memory_message(error, "running the networks", lower))
        return ExitCode.OUT_OF_MEMORY
    except BatchInterrupted as interrupt:
        print(
            f"interrupted: {interrupt.rows} scored pairs kept in {interrupt.results}; run the same command again "
            "to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # outside the scoring: nothing half-written is kept (files are written whole)
        print("interrupted: run the same command again", file=sys.stderr)
        return EXIT_INTERRUPTED
    # leakage writes no summary.json: its few counts are printed whole
    print(json.dumps(summary, indent=2) if args.command == "leakage" else headline_table(args.command, summary))
    return ExitCode.CHECK_FAILED if args.command == "leakage" and summary["shared_identities"] else ExitCode.OK


def figure_text(value) -> str:
    """A figure as the console shows it: at most 4 decimals (summary.json keeps every digit), n/a for None."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, float | np.floating):
        return str(value)
    return f"{value:.4f}".rstrip("0").rstrip(".") if value % 1 else f"{value:.0f}"


def _table(rows: list[list], header: list[str] | None = None) -> list[str]:
    """Rows of cells as aligned lines: the first column left, the others right."""
    cells = [[figure_text(cell) for cell in row] for row in rows]
    if header:
        cells.insert(0, header)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [
        "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        for row in cells
    ]


def headline_table(command: str, summary: dict) -> str:
    """What evaluate.py prints for age, verify and retrieve: the headline figures in a short table, and where
    summary.json holds them all."""
    if command == "age":
        baseline = summary["baseline"]
        lines = [f"{summary['faces']} faces"]
        lines += _table(
            [
                ["MAE (years)", summary["mae"], baseline["mae"]],
                ["CS@5", summary["cs5"], baseline["cs5"]],
                ["bias (years, predicted - true)", summary["bias"], ""],
                ["90% interval coverage", summary["interval_coverage"], ""],
            ],
            ["", "model", f"median age {figure_text(baseline['median_age'])}"],
        )
        lines.append(f"baseline: {baseline['what']}")
        decades = [[decade, row["faces"], row["mae"], row["bias"]] for decade, row in summary["per_decade"].items()]
        lines += ["per decade:", *_table(decades, ["decade", "faces", "MAE", "bias"])]
    elif command == "verify":
        lines = [
            (
                f"{summary['pairs']} pairs, {summary['scored_pairs']} scored ({summary['pairs_without_a_face']} "
                "without a face)"
            )
        ]
        columns = {"all": summary} | {
            band: figures for band, figures in (summary.get("by_age_gap") or {}).items() if figures.get("pairs")
        }
        names = [
            ("ROC AUC", "roc_auc"),
            ("EER", "eer"),
            *((f"TAR at FAR {far:g}", f"tar_at_far_{far:g}") for far in TARGET_FARS),
            (f"accuracy at {figure_text(summary['threshold'])}", "accuracy_at_threshold"),
            ("best threshold", "best_threshold"),
            ("best accuracy", "best_accuracy"),
        ]
        header = ["", *(name if name == "all" else f"gap {name}" for name in columns)]
        counts = ["pairs (same/different)"] + [
            f"{f.get('same_person_pairs', 0)}/{f.get('different_person_pairs', 0)}" for f in columns.values()
        ]
        lines += _table([counts, *([label] + [f.get(key) for f in columns.values()] for label, key in names)], header)
    else:
        lines = [
            f"{summary['photos']} photos ({summary['photos_without_a_face']} without a face), by {summary['grouped_by']}"
        ]
        rows = [
            [row["gap"], row["queries"], row["map"], row["rank_1"], row["rank_5"], row["chance_rank_1"]]
            for row in summary["by_gap"]
        ]
        lines += _table(
            rows, [f"gap ({summary['grouped_by']}s)", "queries", "MAP", "rank-1", "rank-5", "chance rank-1"]
        )
    return "\n".join([*lines, f"all figures: {summary['files']['summary']}"])


def _missing_input(args, config: Config) -> str | None:
    """A CSV or folder the command reads that does not exist, said as its reader would say it."""
    by_command: dict[str, list[tuple[str, Any]]] = {
        "age": [("labels file", args.csv or config.val_csv)] if args.command == "age" else [],
        "verify": [("pairs file", getattr(args, "pairs", None))],
        "retrieve": [("labels file", getattr(args, "csv", None))],
        "leakage": [("labels file", config.train_csv), ("labels file", config.val_csv)],
    }
    files = by_command[args.command]
    for what, path in files:
        if path is not None and not Path(path).is_file():
            return f"{what} {path} does not exist; check the path"
    return None


if __name__ == "__main__":
    sys.exit(main())
