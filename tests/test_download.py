import pytest

import download
from download import DownloadError


def test_download_writes_the_file_and_leaves_no_part(http_dir, tmp_path):
    folder, base_url, _ = http_dir
    (folder / "blob.bin").write_bytes(bytes(range(256)) * 100)
    dest = download.download(base_url + "blob.bin", tmp_path / "out" / "blob.bin", quiet=True)
    assert dest.read_bytes() == bytes(range(256)) * 100
    assert not list(dest.parent.glob("*.part"))


def test_interrupted_download_resumes_with_range(http_dir, tmp_path):
    folder, base_url, log = http_dir
    payload = bytes(range(256)) * 100
    (folder / "blob.bin").write_bytes(payload)
    dest = tmp_path / "blob.bin"
    (tmp_path / "blob.bin.part").write_bytes(payload[:1000])  # what a killed run left behind
    download.download(base_url + "blob.bin", dest, quiet=True)
    assert dest.read_bytes() == payload
    assert log[-1]["range"] == "bytes=1000-"


def test_failure_keeps_nothing_that_looks_finished(http_dir, tmp_path):
    _, base_url, log = http_dir
    with pytest.raises(DownloadError, match="after 2 attempts.*404"):
        download.download(base_url + "missing.bin", tmp_path / "missing.bin", retries=1, quiet=True)
    assert not (tmp_path / "missing.bin").exists()
    assert len(log) == 2


def test_existing_file_is_reused(http_dir, tmp_path):
    _, base_url, log = http_dir
    (tmp_path / "done.bin").write_bytes(b"x")
    download.download(base_url + "done.bin", tmp_path / "done.bin", quiet=True)
    assert log == []
