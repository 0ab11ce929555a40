import pytest

from face_match_age.files import downloader
from face_match_age.files.downloader import DownloadError


def test_download_writes_the_file_and_leaves_no_part(http_dir, tmp_path):
    folder, base_url, _ = http_dir
    (folder / "blob.bin").write_bytes(bytes(range(256)) * 100)
    dest = downloader.download(base_url + "blob.bin", tmp_path / "out" / "blob.bin", quiet=True)
    assert dest.read_bytes() == bytes(range(256)) * 100
    assert not list(dest.parent.glob("*.part"))


def test_interrupted_download_resumes_with_range(http_dir, tmp_path):
    folder, base_url, log = http_dir
    payload = bytes(range(256)) * 100
    (folder / "blob.bin").write_bytes(payload)
    dest = tmp_path / "blob.bin"
    (tmp_path / "blob.bin.part").write_bytes(payload[:1000])  # what a killed run left behind
    downloader.download(base_url + "blob.bin", dest, quiet=True)
    assert dest.read_bytes() == payload
    assert log[-1]["range"] == "bytes=1000-"


def test_failure_keeps_nothing_that_looks_finished(http_dir, tmp_path):
    _, base_url, log = http_dir
    with pytest.raises(DownloadError, match="after 1 attempt: 404"):  # a 404 is not retried
        downloader.download(base_url + "missing.bin", tmp_path / "missing.bin", retries=3, quiet=True)
    assert not (tmp_path / "missing.bin").exists()
    assert len(log) == 1


def test_transient_failures_are_retried(tmp_path, capsys):
    import http.server
    import threading

    calls = []

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            calls.append(self.path)
            if len(calls) < 3:
                self.send_error(503)
                return
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/f"
        assert downloader.download(url, tmp_path / "f", quiet=True).read_bytes() == b"hello"
    finally:
        server.shutdown()
    assert len(calls) == 3
    assert "attempt 3 of 4" in capsys.readouterr().err


def test_nothing_listening_is_not_retried(tmp_path, capsys):
    with pytest.raises(DownloadError, match="after 1 attempt"):
        downloader.download("http://127.0.0.1:9/x", tmp_path / "x", quiet=True)
    assert capsys.readouterr().err == ""


def test_existing_file_is_reused(http_dir, tmp_path):
    _, base_url, log = http_dir
    (tmp_path / "done.bin").write_bytes(b"x")
    downloader.download(base_url + "done.bin", tmp_path / "done.bin", quiet=True)
    assert log == []
