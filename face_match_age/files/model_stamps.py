"""How a run records the model files its results were made with (batch.json, an embedding store's
settings.json), and names them when a rerun's records differ: a file replaced under the same name and options
is what a user cannot see."""

from __future__ import annotations

from pathlib import Path


def file_stamp(path: Path | None) -> list | None:
    """[path, size, modification time] of a model file: retraining into the same path is another batch."""
    if path is None:
        return None
    try:
        status = Path(path).stat()
    except OSError:
        return [str(path), None, None]
    return [str(path), status.st_size, status.st_mtime_ns]


def model_files(keys: list[str], settings: dict) -> list[str]:
    """The files named by the settings `keys` whose value identifies a model file (file_stamp's [path, size,
    time], weights_identity's {"file": name, "sha256": ...}): a refusal names them."""
    names = []
    for key in keys:
        value = settings.get(key)
        if isinstance(value, dict) and "file" in value:
            names.append(value["file"])
        elif isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
            names.append(value[0])
    return names
