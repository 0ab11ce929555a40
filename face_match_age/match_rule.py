"""When two faces are one person: the one match rule of every mode (pair, --pairs, --folder), of evaluate.py's
figures and sheets, and of the numerics checks.

    rule = MatchRule(0.7)                              # a fixed threshold (infer.py --threshold)
    rule = MatchRule.from_calibration("calibration.json")  # a threshold per predicted age-gap band
    rule.is_match(similarity, age_gap)                 # a number or arrays (numpy or torch): the verdict
    rule.judge(similarities, age_gaps)                 # (verdicts, thresholds), to report the threshold used

A pair matches when the cosine similarity of the two faces' embeddings is strictly greater than the threshold.
With a calibration (evaluate.py verify --calibrate) the threshold is that of the band ("0-5", "5-10", "10-20",
"20+" years) holding the pair's predicted age gap; a band measured on too few pairs, or a pair without a
predicted gap, takes the calibration's overall threshold.

One dtype, float32, for every similarity and every comparison. Embeddings are float32, and so are the
similarities a folder search keeps (4 bytes a pair, for up to 50 million pairs). A similarity is accumulated
in float64 and rounded to float32 once (cosine_similarities): the products of float32 numbers are exact in
float64, and the sum's rounding error (~1e-16) is far below float32's step (6e-8 near 0.7), so the float32
result does not depend on how a matrix product splits the sum (but for a sum within ~1e-16 of a float32
rounding boundary, about one pair in 10^8). Summed in float32, a 1 x 1 product (a pair) and a 2048 x 2048
tile (a folder) differ in the last bit of most similarities (measured: 88% of 2,000 pairs), and a pair on
the threshold could then match in one mode and not the other. The threshold is rounded to float32 too, so a
similarity and a threshold compare the same way as Python floats, numpy arrays or torch tensors. The cost:
float64 tiles make a folder's search about 1.7 times as long as float32 ones (10,000 random embeddings on the
2-core build machine: 3.3 s in float32, 5.8 s), where embedding the photos takes far longer than searching.
"""

from __future__ import annotations

import json
import math
import numbers
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

# The age-gap bands a calibration holds a threshold for: (name, lowest gap, first gap above), years.
AGE_GAP_BANDS = (("0-5", 0, 5), ("5-10", 5, 10), ("10-20", 10, 20), ("20+", 20, math.inf))
_BAND_STARTS = np.array([low for _, low, _ in AGE_GAP_BANDS], dtype=np.float64)
AGE_GAP_DECIMALS = 2  # an age gap as results report it, and as a calibrated rule reads it
RULE_TEXT = "a pair matches when its cosine similarity is greater than the threshold"


class CalibrationError(ValueError):
    """A calibration file that cannot be used."""


def cosine_similarities(first, second):
    """The cosine similarity of every row of `first` (N x D) with every row of `second` (M x D): N x M float32,
    a numpy array for numpy input and a tensor for torch input (on the CPU). Accumulated in float64 and
    rounded once, so the value of a pair is the same whatever else is in the product (see the module)."""
    similarity = unit_similarities(unit_rows(first), unit_rows(second))
    return similarity if _is_tensor(first) else similarity.numpy()


def unit_rows(rows):
    """The rows (N x D, numpy or torch) as float64 unit vectors, a CPU tensor: what unit_similarities takes. A
    search converts each block of embeddings once, then pairs it with many others."""
    import torch  # here, not at the top: infer.py --help and evaluate.py's summaries never need it

    # np.array copies: a memory-mapped store is read-only, which torch.from_numpy warns about
    rows = rows.to(torch.float64) if _is_tensor(rows) else torch.from_numpy(np.array(rows, dtype=np.float64))
    return torch.nn.functional.normalize(rows, dim=1)


def unit_similarities(first, second):
    """cosine_similarities of rows already made unit_rows: their float64 products, rounded once to float32."""
    import torch

    return (first @ second.T).to(torch.float32)


def cosine_similarity(embedding_1, embedding_2) -> float:
    """The cosine similarity of two embeddings (1-D), as cosine_similarities computes it."""
    return float(cosine_similarities(np.reshape(embedding_1, (1, -1)), np.reshape(embedding_2, (1, -1)))[0, 0])


def above(similarity, threshold):
    """The one comparison: `similarity` > `threshold`, both rounded to float32. Either may be a number or a
    numpy array (they broadcast), `similarity` also a torch tensor (then `threshold` is a number); a bool for
    numbers, else an array (tensor) of bools. NaN (no similarity) is never above."""
    threshold = np.asarray(threshold, dtype=np.float32)
    # As a Python float, a float32 threshold compares exactly with a float32 array or tensor, in either dtype.
    threshold = float(threshold) if threshold.ndim == 0 else threshold
    if _is_tensor(similarity):
        return similarity.float() > threshold
    verdict = np.asarray(similarity, dtype=np.float32) > threshold
    return bool(verdict) if verdict.ndim == 0 else verdict


def _is_tensor(value) -> bool:
    torch = sys.modules.get("torch")  # not imported yet: `value` cannot be a tensor
    return torch is not None and isinstance(value, torch.Tensor)


def age_gap_band(gap: float | None) -> str | None:
    """The band ("0-5", "5-10", "10-20", "20+") holding an age gap (its absolute value; lower bounds included);
    None for no gap (None, NaN or infinite)."""
    index = int(_band_indices(np.asarray([np.nan if gap is None else gap], dtype=np.float64))[0])
    return AGE_GAP_BANDS[index][0] if index < len(AGE_GAP_BANDS) else None


def _band_indices(gaps: np.ndarray) -> np.ndarray:
    """Each gap's index in AGE_GAP_BANDS, len(AGE_GAP_BANDS) where there is no gap (NaN or infinite)."""
    magnitude = np.abs(gaps)
    indices = np.searchsorted(_BAND_STARTS, magnitude, side="right") - 1
    return np.where(np.isfinite(magnitude), indices, len(AGE_GAP_BANDS))


def load_calibration(path: Path) -> dict:
    """The calibration record evaluate.py verify --calibrate wrote (calibration.json); CalibrationError when it
    is missing, not such a file, or holds no overall threshold."""
    try:
        calibration = json.loads(Path(path).read_text())
        calibration["overall"]["threshold"], calibration["bands"]  # noqa: B018 (the fields it must have)
    except FileNotFoundError:
        raise CalibrationError(
            f"no calibration file at {path}; write one with "
            "`uv run python evaluate.py verify --pairs PAIRS.csv --out DIR --calibrate`"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CalibrationError(f"{path} is not a calibration file written by evaluate.py ({error})") from None
    if calibration["overall"]["threshold"] is None:
        raise CalibrationError(f"{path} has no overall threshold: it was measured without different-person pairs")
    return calibration


@dataclass(frozen=True)
class MatchRule:
    """The threshold a similarity must exceed: `threshold` for every pair, or with `calibration` (the record of
    calibration.json, read from `source`) the threshold of each pair's age-gap band, `threshold` being the
    calibration's overall one. Build a calibrated rule with MatchRule.from_calibration."""

    threshold: float
    calibration: dict | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, numbers.Real):
            kind = type(self.threshold).__name__
            raise TypeError(f"threshold must be a number (a cosine similarity in [-1, 1]), not {kind}")
        if not -1 <= self.threshold <= 1:
            raise ValueError(f"threshold must be a cosine similarity in [-1, 1], not {self.threshold}")
        object.__setattr__(self, "threshold", float(self.threshold))  # a numpy number too, as results write it

    @classmethod
    def from_calibration(cls, path: Path | str) -> MatchRule:
        calibration = load_calibration(Path(path))
        try:
            rule = cls(float(calibration["overall"]["threshold"]), calibration, str(path))
            rule._thresholds  # noqa: B018 (a threshold, or None, for every band)
        except (KeyError, TypeError, ValueError) as error:
            raise CalibrationError(f"{path} is not a calibration file written by evaluate.py ({error!r})") from None
        return rule

    @property
    def by_age_gap(self) -> bool:
        """Whether the threshold depends on the pair's age gap (a calibration), so that callers compute gaps."""
        return self.calibration is not None

    @property
    def lowest(self) -> float:
        """The lowest threshold any pair can be judged by: what a search must keep."""
        return float(min(self._thresholds))

    def judge(self, similarity, age_gap=None):
        """(verdict, threshold) of a pair, or of many: `similarity` a number, a numpy array or a torch tensor;
        `age_gap` None, a number or an array like `similarity` (None or NaN: no predicted gap). The threshold
        is the number used (a Python float) for a number or no gap, else a float32 array, one per pair."""
        if np.ndim(age_gap) == 0:
            threshold = self.threshold_for(age_gap)[0]
        else:
            threshold = self._thresholds.astype(np.float32)[self._indices(age_gap)]
        return above(similarity, threshold), threshold

    def is_match(self, similarity, age_gap=None):
        """Whether the similarity is above the pair's threshold (see judge): a bool, or an array of them."""
        return self.judge(similarity, age_gap)[0]

    def threshold_for(self, age_gap: float | None) -> tuple[float, dict | None]:
        """(threshold, why) for a pair whose predicted age gap is `age_gap` (None when unknown): why is None for
        a fixed threshold, else what results report as `threshold_source`."""
        index = int(self._indices(np.nan if age_gap is None else age_gap)[()])
        threshold = float(self._thresholds[index])
        if self.calibration is None:
            return threshold, None
        why = {"calibration": self.source, "band": None, "target_far": self.calibration["target_far"]}
        if index == len(AGE_GAP_BANDS):
            return threshold, why | {
                "reason": "no predicted age gap (ages off or missing), so the overall calibrated threshold"
            }
        band = AGE_GAP_BANDS[index][0]
        entry = self.calibration["bands"][band]
        reason = entry.get("reason") or f"calibrated on {entry['pairs']} pairs with an age gap of {band} years"
        return threshold, why | {"band": band, "reason": reason}

    def describe(self) -> float | dict:
        """The rule as JSON-ready data, as batch.json records it: the number, or the calibration and its file."""
        return self.threshold if self.calibration is None else {"calibration": self.source, "rule": self.calibration}

    def _indices(self, age_gaps) -> np.ndarray:
        """Each gap's row of _thresholds: its band's, or the last (the overall threshold) for no gap or a fixed rule."""
        gaps = np.asarray(age_gaps, dtype=np.float64)
        if self.calibration is None:
            return np.zeros(gaps.shape, dtype=np.intp)
        # The gap as results write it (2 decimals): a pair's gap of 5 years is 5.0 in pair mode, where it is
        # rounded first, and 4.999999999999998 in a folder's subtraction of two ages; both are in "5-10".
        return _band_indices(np.round(gaps, AGE_GAP_DECIMALS))

    @cached_property
    def _thresholds(self) -> np.ndarray:
        """float64 thresholds: one per band then the overall one for a calibration; the one number for a fixed
        rule. A band measured without different-person pairs (threshold None) takes the overall threshold."""
        if self.calibration is None:
            return np.array([self.threshold])
        bands = [self.calibration["bands"][name]["threshold"] for name, _, _ in AGE_GAP_BANDS]
        return np.array([self.threshold if t is None else t for t in bands] + [self.threshold], dtype=np.float64)
