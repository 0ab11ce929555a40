"""Face embeddings kept on disk, one chunk at a time, so a killed run resumes where it stopped.

A store is a folder: each chunk is a part file of embeddings (part_NNNNN.npy) and a part table
(part_NNNNN.jsonl, one line per photo: row, file, its face's fields, error, stamp), and manifest.json lists
the chunks that are complete. A chunk counts only once the manifest names it, and the manifest is replaced
atomically after both part files are whole: a run killed mid-chunk leaves part files no manifest names,
which are ignored and written again. Photos without a face have a table line (row null, the error) and
no embedding, so `row` indexes the store's embeddings directly.

The store is only ever appended to: a photo embedded again (its file changed) gets a record in a later chunk,
and the latest record of a file is the one that counts. Older chunks stay as written, readable, their
superseded rows simply no longer referenced (2 KB each).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from face_match_age.files.output_files import write_atomically, write_json

MANIFEST = "manifest.json"
# A photo's face: the fields of the result schema's face record (inference/records.py FaceResult). Kept here, not
# imported: this module stores what it is given and knows nothing of inference; tests/test_records.py checks that
# the two agree.
FACE_FIELDS = ("box", "detection_probability", "faces_found", "age", "age_std", "age_interval")
# stamp: what the photo's file was when it was read (photo_lists.photo_stamp), to notice it replaced since
TABLE_FIELDS = ("row", "file", *FACE_FIELDS, "error", "stamp")


class StoreError(ValueError):
    """A store that cannot be read, appended to or merged as asked."""


class EmbeddingStore:
    """The store in `folder` (created on the first append); `dimension` is checked against what it holds."""

    def __init__(self, folder: Path, dimension: int = 512):
        self.folder = Path(folder)
        self.dimension = dimension
        self.parts: list[dict] = []
        manifest = self.folder / MANIFEST
        if manifest.is_file():
            recorded = json.loads(manifest.read_text(encoding="utf-8"))
            if recorded["dimension"] != dimension:
                raise StoreError(f"{self.folder} holds {recorded['dimension']}-d embeddings, not {dimension}-d")
            self.parts = recorded["parts"]
        self._latest: dict[str, dict] = {}  # file -> its latest record; kept, so an append need not reread
        for part in self.parts:
            self._supersede(self._part_table(part))

    def __len__(self) -> int:
        """Embeddings held in the part files (photos with a face), superseded ones included: the next row."""
        return sum(part["embeddings"] for part in self.parts)

    def append(self, records: Sequence[dict], embeddings: Sequence[np.ndarray | None]) -> None:
        """Add one chunk: a table record per photo (file, and any of the face's fields, error, stamp) and its
        embedding, or None where it has none. A record of a photo the store holds supersedes the older one."""
        if len(records) != len(embeddings):
            raise StoreError(f"{len(records)} records but {len(embeddings)} embeddings")
        names = [record["file"] for record in records]
        if len(set(names)) < len(names):
            raise StoreError("a chunk names the same photo twice; embed each photo once")
        vectors = [vector for vector in embeddings if vector is not None]
        if any(np.shape(vector) != (self.dimension,) for vector in vectors):
            raise StoreError(f"every embedding must hold {self.dimension} numbers")
        stacked = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), self.dimension)
        lines, row = [], len(self)
        for record, vector in zip(records, embeddings, strict=True):
            lines.append(
                {field: record.get(field) for field in TABLE_FIELDS} | {"row": row if vector is not None else None}
            )
            row += vector is not None
        self._write_part(stacked, lines)

    def _write_part(self, stacked: np.ndarray, lines: list[dict]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"part_{len(self.parts):05d}"

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as file:  # a file object: np.save would add .npy to a path
                np.save(file, stacked)

        write_atomically(self.folder / f"{name}.npy", save)
        text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        write_atomically(self.folder / f"{name}.jsonl", lambda tmp: tmp.write_text(text, encoding="utf-8"))
        part = {"name": name, "embeddings": len(stacked), "records": len(lines)}
        write_json(self.folder / MANIFEST, {"dimension": self.dimension, "parts": [*self.parts, part]})
        self.parts.append(part)
        self._supersede(lines)

    def _part_table(self, part: dict) -> list[dict]:
        text = (self.folder / f"{part['name']}.jsonl").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]

    def _supersede(self, records: list[dict]) -> None:
        for record in records:
            self._latest.pop(record["file"], None)  # moved to the end: the table's order is the order appended
            self._latest[record["file"]] = record

    def table(self) -> list[dict]:
        """Each photo's latest record, in the order appended."""
        return [dict(record) for record in self._latest.values()]

    def files(self) -> set[str]:
        """The photos already done: a resumed run skips those whose file has not changed since."""
        return set(self._latest)

    def stamps(self) -> dict[str, object]:
        """Each photo's stamp, as its latest record holds it (None in a store written before stamps)."""
        return {file: record.get("stamp") for file, record in self._latest.items()}

    def embeddings(self) -> np.ndarray:
        """All embeddings as one N x dimension float32 array, row i the table's `row` i."""
        parts = [np.load(self.folder / f"{part['name']}.npy", mmap_mode="r") for part in self.parts]
        if not parts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def rows(self, indices: Sequence[int]) -> np.ndarray:
        """The embeddings of rows `indices`, in that order, as one len(indices) x dimension float32 array, read
        part by part (memory: the result, never all embeddings twice)."""
        wanted = np.asarray(indices, dtype=np.int64)
        gathered = np.empty((len(wanted), self.dimension), dtype=np.float32)
        start = 0
        for part in self.parts:
            stop = start + part["embeddings"]
            here = np.flatnonzero((wanted >= start) & (wanted < stop))
            if len(here):
                stored = np.load(self.folder / f"{part['name']}.npy", mmap_mode="r")
                gathered[here] = stored[wanted[here] - start]
            start = stop
        if len(wanted) and (wanted.min() < 0 or wanted.max() >= start):
            raise StoreError(f"{self.folder} holds {start} embeddings; row {wanted.max()} is not one of them")
        return gathered


def merge_stores(stores: Sequence[Path], out: Path, dimension: int = 512) -> EmbeddingStore:
    """One store in `out` (new or empty) holding the shards `stores` in order, as if one run had embedded
    their photos one after the other. Refuses a photo found in two shards, naming it and both shards."""
    merged = EmbeddingStore(out, dimension)
    if merged.parts:
        raise StoreError(f"{out} already holds a store; merge into a new folder")
    shards = [EmbeddingStore(store, dimension) for store in stores]
    owner: dict[str, Path] = {}
    for shard in shards:
        for file in sorted(shard.files()):
            if file in owner:
                raise StoreError(f"{file} is in two shards, {owner[file]} and {shard.folder}; embed each photo once")
            owner[file] = shard.folder
    for shard in shards:
        records, vectors = shard.table(), shard.embeddings()
        if records:
            merged.append(records, [None if record["row"] is None else vectors[record["row"]] for record in records])
    return merged
