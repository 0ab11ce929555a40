"""Age decades: the bands that evaluation reports and splits balance, 0-9, 10-19, ... 80-89 and 90-100.

Ages run from MIN_AGE to MAX_AGE (0..100), so the last band holds eleven ages: 100 joins 90-99 rather than
forming a band of its own, which would hold a handful of faces and give per-decade figures no one can trust.
Its label says so ("90-100"), so no age falls outside the band its label names.
"""

from __future__ import annotations

import numpy as np

from face_match_age.settings import MAX_AGE, MIN_AGE

DECADE_YEARS = 10
LAST_DECADE = (MAX_AGE - MIN_AGE) // DECADE_YEARS - 1  # 9: the band of 90..100


def age_decade(ages) -> np.ndarray:
    """The decade index (0 for ages 0-9, ... LAST_DECADE for 90-100) of each age; `ages` may be a number,
    a list, a NumPy array, a pandas Series or a CPU tensor."""
    return np.minimum((np.asarray(ages, dtype=np.float64) - MIN_AGE) // DECADE_YEARS, LAST_DECADE).astype(np.int64)


def decade_label(decade: int) -> str:
    """The ages a decade index covers, as "10-19"; the last decade is "90-100"."""
    low = MIN_AGE + int(decade) * DECADE_YEARS
    high = MAX_AGE if decade == LAST_DECADE else low + DECADE_YEARS - 1
    return f"{low}-{high}"
