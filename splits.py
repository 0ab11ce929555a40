"""Train/validation splits that do not leak people, balanced across age bands.

When identities are known, whole people go to one side: the same face in train and val makes
validation flattering (see shared/datasets.md). People are assigned band by band (decades of their
median age) until each band's validation share reaches the ratio, so val covers children and old
people as train does. Without identities the split is random, stratified by age band.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BAND_YEARS = 10


def age_band(ages: pd.Series) -> pd.Series:
    return (ages // BAND_YEARS).clip(upper=9)


def split_records(records: pd.DataFrame, val_ratio: float, seed: int, has_identity: bool
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, val) rows of `records` (columns source, age, identity); deterministic for a seed."""
    rng = np.random.default_rng(seed)
    if has_identity and records["identity"].notna().all():
        in_val = _identity_split(records, val_ratio, rng)
    else:
        in_val = _stratified_split(records, val_ratio, rng)
    return records[~in_val].reset_index(drop=True), records[in_val].reset_index(drop=True)


def _identity_split(records: pd.DataFrame, val_ratio: float, rng: np.random.Generator) -> pd.Series:
    people = records.groupby("identity").agg(images=("age", "size"), median_age=("age", "median"))
    people["band"] = age_band(people["median_age"])
    chosen: set = set()
    for _, band in people.groupby("band"):
        order = band.index.to_numpy()[rng.permutation(len(band))]
        target, taken = val_ratio * band["images"].sum(), 0
        for person in order:
            if taken >= target or len(chosen) + 1 >= len(people):  # keep at least one person for training
                break
            chosen.add(person)
            taken += band.at[person, "images"]
    return records["identity"].isin(chosen)


def _stratified_split(records: pd.DataFrame, val_ratio: float, rng: np.random.Generator) -> pd.Series:
    in_val = pd.Series(False, index=records.index)
    for _, band in records.groupby(age_band(records["age"])):
        count = int(round(val_ratio * len(band)))
        in_val[band.index.to_numpy()[rng.permutation(len(band))[:count]]] = True
    return in_val


def shared_identities(train: pd.DataFrame, val: pd.DataFrame) -> list:
    """People present in both sets (empty for a clean split; identities unknown count as none)."""
    return sorted(set(train["identity"].dropna()) & set(val["identity"].dropna()))
