"""Identity clusters: the photos of a folder grouped into people, and each person's age timeline.

Two photos are the same person when their embeddings match (similarity above the verification threshold,
as found by similarity_search.threshold_pairs); a cluster is a connected component of that match graph, so
a photo joins a cluster when it matches any one of its photos. Why connected components rather than
agglomerative clustering: the result is exact and has no parameter beyond the verification threshold the
user already chose; it costs time and memory linear in photos + matches (a sparse graph), whereas
agglomerative clustering needs the N x N distance matrix (100,000² float64 distances are 80 GB) or an
approximation.
The price is chaining: a ~ b and b ~ c put a and c together even when a does not match c, so one false
match can merge two people. The timeline image shows every cluster's faces side by side, which exposes
such a merge at a glance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from face_match_age.detection.imaging import ImageLoadError, load_image
from face_match_age.inference.similarity_search import Matches
from face_match_age.reports.contact_sheet import MAX_TILES, Tile, save_contact_sheet, thumbnail

CLUSTER_COLUMNS = ("cluster", "size", "age_min", "age_max", "example", "timeline")
EDGES_PER_STEP = 1 << 22  # matches joined into the clusters at a time (~200 MB of scipy's graph)
TIMELINE_LIMIT = 100  # timeline images written at most: the largest clusters are the ones worth a look


def cluster_labels(count: int, matches: Matches) -> np.ndarray:
    """The cluster of each of `count` embedding rows: connected components of the graph whose edges are
    `matches`. Labels run 0..C-1 by cluster size, largest first, ties by the cluster's smallest row, so they
    do not depend on the order of the matches. A row without a match is a cluster of its own."""
    first, second = np.asarray(matches.first), np.asarray(matches.second)  # no copy: there may be millions
    if len(first) and max(first.max(), second.max()) >= count:
        raise ValueError(f"a match names row {max(first.max(), second.max())} but there are only {count} rows")
    if count == 0:
        return np.zeros(0, np.int64)
    components = np.arange(count)
    # The matches are joined EDGES_PER_STEP at a time, each step between the components found so far: scipy
    # turns a graph into float64 CSR twice over (it and its transpose), 2 GB for the 50 million matches of
    # 10,000 photos of one person, and a step's graph is bounded instead.
    for start in range(0, len(first), EDGES_PER_STEP):
        ends = (components[first[start : start + EDGES_PER_STEP]], components[second[start : start + EDGES_PER_STEP]])
        graph = coo_matrix((np.ones(len(ends[0]), np.int8), ends), shape=(count, count))
        components = connected_components(graph, directed=False)[1][components]
    sizes = np.bincount(components)
    _, smallest_row = np.unique(components, return_index=True)  # the first row of each component
    order = np.lexsort((smallest_row, -sizes))  # components in their final order
    renumbered = np.empty_like(order)
    renumbered[order] = np.arange(len(order))
    return renumbered[components].astype(np.int64)


def cluster_members(labels: np.ndarray) -> list[np.ndarray]:
    """The rows of each cluster (ascending), indexed by label."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    boundaries: np.ndarray | list[int] = np.cumsum(np.bincount(labels))[:-1] if len(labels) else []
    return np.split(order, boundaries)


def cluster_table(
    labels: np.ndarray, records: Sequence[dict], timelines: Mapping[int, str | Path] | None = None
) -> list[dict]:
    """One row per cluster, in label order, with CLUSTER_COLUMNS: its size, predicted age range (None
    without an age model), the file of its first photo, and its timeline image (`timelines`: label ->
    path, given relative to the output folder; "" for a cluster without one). `records[i]` is the
    store's table record of embedding row i."""
    timelines = timelines or {}
    table = []
    for label, rows in enumerate(cluster_members(labels)):
        ages = [records[row]["age"] for row in rows if records[row]["age"] is not None]
        table.append(
            {
                "cluster": label,
                "size": len(rows),
                "age_min": round(min(ages), 1) if ages else None,
                "age_max": round(max(ages), 1) if ages else None,
                "example": records[rows[0]]["file"],
                "timeline": Path(timelines[label]).as_posix() if label in timelines else "",
            }
        )
    return table


def timeline_members(
    rows: Sequence[int], ages: Sequence[float | None], files: Sequence[str], limit: int = MAX_TILES
) -> list[int]:
    """`rows` (with their `ages` and `files`) in age order, youngest first, photos without an age after
    them by file name; when there are more than `limit`, `limit` of them evenly spaced along that order,
    always the youngest and the oldest."""
    if not len(rows) == len(ages) == len(files):
        raise ValueError(f"{len(rows)} rows but {len(ages)} ages and {len(files)} files")
    order = sorted(range(len(rows)), key=lambda i: (ages[i] is None, ages[i] or 0.0, files[i]))
    ordered = [rows[i] for i in order]
    if len(ordered) <= limit:
        return ordered
    if limit < 2:
        return ordered[:limit]
    # Spacing of at least one place, so rounding never picks the same photo twice.
    positions = np.floor(np.linspace(0, len(ordered) - 1, limit) + 0.5).astype(int)
    return [ordered[position] for position in positions]


def save_cluster_timelines(
    labels: np.ndarray, records: Sequence[dict], photo_folder: Path, out_folder: Path, limit: int = TIMELINE_LIMIT
) -> dict[int, Path]:
    """Write out_folder/cluster_NNNNN.jpg for each cluster of two photos or more, largest first, at most
    `limit` of them: its faces in age order (at most MAX_TILES, evenly spaced when more). Returns label ->
    image path. Photos are read from `photo_folder` (records name them relative to it); one that cannot
    be read any more leaves an empty tile."""
    written: dict[int, Path] = {}
    for label, rows in enumerate(cluster_members(labels)):
        if len(rows) < 2 or len(written) >= limit:
            break  # labels run largest first: the rest are smaller
        out_folder.mkdir(parents=True, exist_ok=True)
        path = out_folder / f"cluster_{label:05d}.jpg"
        written[label] = _save_timeline(label, [records[row] for row in rows], Path(photo_folder), path)
    return written


def _save_timeline(label: int, members: list[dict], photo_folder: Path, path: Path) -> Path:
    ages = [member["age"] for member in members]
    chosen = timeline_members(range(len(members)), ages, [member["file"] for member in members])
    tiles = [
        Tile([_face(photo_folder / members[index]["file"], members[index]["box"])], _caption(members[index]))
        for index in chosen
    ]
    return save_contact_sheet(tiles, path, _timeline_title(label, ages, len(chosen)))


def _timeline_title(label: int, ages: list[float | None], shown: int) -> str:
    known = [age for age in ages if age is not None]
    span = f"ages {min(known):.0f}-{max(known):.0f}" if known else "no age model"
    title = f"cluster {label}: {len(ages)} photos, {span}"
    if shown < len(ages):
        title += f" ({shown} shown, evenly spaced by age)"
    return title


def _caption(member: dict) -> list[str]:
    age, uncertainty = member["age"], member["age_std"]
    if age is None:
        age_text = "age: no model"
    else:
        age_text = f"age {age:.1f}" + (f" ± {uncertainty:.1f}" if uncertainty is not None else "")
    return [age_text, Path(member["file"]).name]


def _face(photo: Path, box: Sequence[float] | None) -> Image.Image | None:
    """The thumbnail of the face `box` in `photo`; None (an empty tile) when the photo cannot be read any
    more (moved or deleted since it was embedded). Each member is a distinct photo, so each is opened once."""
    try:
        return thumbnail(load_image(photo), box or None)
    except (ImageLoadError, OSError):
        return None
