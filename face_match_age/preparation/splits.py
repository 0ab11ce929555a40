"""Train/validation splits that do not leak people, balanced across age bands.

When identities are known, whole people go to one side: the same face in train and val makes validation
flattering (IMDB-WIKI, CACD and FG-NET hold many photos of each person). A row without an identity counts as a
person of its own. People are first picked band by band (age_decades: the decade of their median age) towards
each band's share, so val covers children and old people as train does; then single people are moved in or
out, over all bands, while that brings the val share of images closer to the ratio. Without identities the
split is random, stratified by age band, and meets the ratio to within one image.

The val share of images is then within SPLIT_TOLERANCE of the ratio (or one image, on tiny sets);
when whole people cannot be split that finely (few people, or one holding most photos),
`split_shortfall` says so with the real shares. Neither side is ever empty: with fewer than two people
(or, without identities, two photos) SplitError refuses, since an empty val measures nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from face_match_age.evaluation.age_decades import age_decade

SPLIT_TOLERANCE = 0.02  # the val share of images may differ from --val-ratio by this much (2 percentage points)


class SplitError(ValueError):
    """Records that cannot be split into a train and a val side that both hold something."""


def split_records(
    records: pd.DataFrame, val_ratio: float, seed: int, has_identity: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, val) rows of `records` (columns source, age, identity); deterministic for a seed. Raises
    SplitError when one side would be empty."""
    _require_two_units(records, has_identity)
    rng = np.random.default_rng(seed)
    if has_identity:
        in_val = _identity_split(records, val_ratio, rng)
    else:
        in_val = _stratified_split(records, val_ratio, rng)
    train, val = records[~in_val].reset_index(drop=True), records[in_val].reset_index(drop=True)
    if train.empty or val.empty:  # a guard: both splits below give each side something given two units
        empty = "train" if train.empty else "val"
        raise SplitError(f"the split left {empty} empty ({len(train)} train, {len(val)} val)")
    return train, val


def _require_two_units(records: pd.DataFrame, has_identity: bool) -> None:
    """Whole people (or, without identities, photos) go to one side: one of them cannot fill two sides."""
    people = people_of(records) if has_identity else None
    if people is not None and people.nunique() < 2:
        raise SplitError(
            f"all {len(records)} usable photos are of one person ({people.iloc[0].removeprefix('id ')}), and a "
            "split that keeps each person on one side needs at least two people: add photos of other people"
        )
    if not has_identity and len(records) < 2:
        raise SplitError(
            f"only {len(records)} usable photo, and a train and a val split need one each at least: add photos"
        )


def people_of(records: pd.DataFrame) -> pd.Series:
    """The person of each row: its identity, or the row itself when the identity is missing or blank."""
    identity = records["identity"].astype(object)
    missing = identity.isna() | (identity.astype(str).str.strip() == "")
    # Prefixes keep a row's stand-in apart from a real identity that happens to read "row 3".
    return pd.Series(
        [f"row {i}" if gone else f"id {v}" for i, v, gone in zip(records.index, identity, missing)], index=records.index
    )


def _identity_split(records: pd.DataFrame, val_ratio: float, rng: np.random.Generator) -> pd.Series:
    person_of_row = people_of(records)
    people = (
        records.assign(person=person_of_row)
        .groupby("person", sort=True)
        .agg(images=("age", "size"), median_age=("age", "median"))
    )
    people = people.iloc[rng.permutation(len(people))]  # the seed decides who goes where
    sizes, bands = people["images"].to_numpy(), age_decade(people["median_age"])
    chosen = np.zeros(len(people), bool)
    for band in np.unique(bands):  # band by band: val covers every age range train covers
        target, taken = val_ratio * sizes[bands == band].sum(), 0
        for index in np.flatnonzero(bands == band):
            if abs(taken + sizes[index] - target) < abs(taken - target):
                chosen[index], taken = True, taken + sizes[index]
    _approach_total(chosen, sizes, val_ratio * sizes.sum())
    if not chosen.any() and len(people) > 1:  # an empty val cannot validate: give it the smallest person
        chosen[int(np.argmin(sizes))] = True
    return person_of_row.isin(set(people.index[chosen]))


def _approach_total(chosen: np.ndarray, sizes: np.ndarray, target: float) -> None:
    """Move single people in or out of val (in place) while that brings its image count closer to `target`;
    at least one person stays in train. Each move strictly improves, so this ends."""
    while True:
        total = sizes[chosen].sum()
        after = np.where(chosen, total - sizes, total + sizes)  # the val count after flipping each person
        if chosen.sum() >= len(chosen) - 1:
            after = np.where(chosen, after, np.inf)  # adding anyone would leave train empty
        best = int(np.argmin(np.abs(after - target)))
        if not abs(after[best] - target) < abs(total - target):
            return
        chosen[best] = not chosen[best]


def _stratified_split(records: pd.DataFrame, val_ratio: float, rng: np.random.Generator) -> pd.Series:
    bands = pd.Series(age_decade(records["age"]), index=records.index)
    counts = bands.value_counts().sort_index()
    wanted = val_ratio * counts
    per_band = np.floor(wanted).astype(int)
    # Largest remainders get the images that rounding each band down left over, so the total is right too.
    val_images = min(max(int(round(val_ratio * len(records))), 1), len(records) - 1)  # neither side empty
    left_over = val_images - int(per_band.sum())
    for band in (wanted - per_band).sort_values(ascending=False, kind="stable").index[: max(left_over, 0)]:
        per_band[band] += 1
    in_val = pd.Series(False, index=records.index)
    for band, rows in records.groupby(bands):
        in_val[rows.index.to_numpy()[rng.permutation(len(rows))[: per_band[band]]]] = True
    return in_val


def within_tolerance(val_images: int, total_images: int, val_ratio: float) -> bool:
    """Whether val's share of the images is within the stated tolerance of `val_ratio`."""
    return abs(val_images / total_images - val_ratio) <= max(SPLIT_TOLERANCE, 1 / total_images)


def split_shortfall(train: pd.DataFrame, val: pd.DataFrame, val_ratio: float) -> str | None:
    """None when val's share of the images is within the tolerance of `val_ratio`; otherwise what it is
    and why, for a warning."""
    total = len(train) + len(val)
    if total == 0:
        return None
    share = len(val) / total
    if within_tolerance(len(val), total, val_ratio):
        return None
    people = people_of(pd.concat([train, val], ignore_index=True)).value_counts()
    return (
        f"val holds {len(val)} of {total} images ({share:.0%}) and train {len(train)} ({1 - share:.0%}), "
        f"not the {val_ratio:.0%} asked (tolerance {SPLIT_TOLERANCE:.0%} or one image): whole people go to one "
        f"side, and {len(people)} people (the largest with {people.iloc[0]} images) cannot be split closer"
    )


def shared_identities(train: pd.DataFrame, val: pd.DataFrame) -> list:
    """People present in both sets (empty for a clean split; identities unknown or blank count as none)."""
    known = lambda rows: {str(v) for v in rows["identity"].dropna() if str(v).strip()}  # noqa: E731
    return sorted(known(train) & known(val))
