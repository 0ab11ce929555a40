"""The HTTP service (face-match-age serve) through FastAPI's TestClient, on real photos from scikit-image and the
tests' random VGGFace2-layout weights (loaded once for the module): the CLI's answers, every bad upload answered
with a clear HTTP error while the service goes on, concurrent requests batched and answered alike, the page's
calls matching the endpoints, and the command itself started for real."""

import base64
import functools
import io
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_app import load_analyzer
from synthetic import write_band_calibration

import infer
from face_match_age.service.endpoints import ServiceOptions, create_app, page_html

ROOT = Path(__file__).resolve().parents[1]
UPLOAD_LIMIT = 3 * 2**20


@pytest.fixture(scope="module")
def analyzer(_vggface2_file, age_checkpoint):
    return load_analyzer(_vggface2_file[0], age_checkpoint)


@pytest.fixture(scope="module")
def client(analyzer):
    # A long batch wait, so that the concurrency test's requests surely meet in one batch.
    app = create_app(analyzer, ServiceOptions(max_upload_bytes=UPLOAD_LIMIT, batch_wait_s=0.2))
    with TestClient(app) as client:
        yield client


def _upload(path: Path, name: str | None = None) -> tuple[str, bytes, str]:
    return (name or path.name, path.read_bytes(), "image/jpeg")


def _compare(client, photo_dir, first="astronaut.jpg", second="astronaut_edit.jpg", query=""):
    files = {"image1": _upload(photo_dir / first), "image2": _upload(photo_dir / second)}
    return client.post(f"/compare{query}", files=files)


def _without(record: dict, *keys: str) -> dict:
    return {key: value for key, value in record.items() if key not in keys}


def _as_batched(record):
    """`record` with every float compared to 1e-4 (far below the 2 decimals a table shows an age with): JSON
    carries numbers exactly as computed, and the age network run on a batch of another size sums in another
    order, which moves the last bits of a float32 age (measured: up to 1.2e-5 in an age's std, 7.6e-6 in an
    age gap); every other field, the verdicts and the boxes included, must be equal."""
    if isinstance(record, dict):
        return {key: _as_batched(value) for key, value in record.items()}
    if isinstance(record, list):
        return [_as_batched(value) for value in record]
    return pytest.approx(record, rel=1e-5, abs=1e-4) if isinstance(record, float) else record


# --- the answers are the command line's and the Python API's ------------------------------------------------------


def test_compare_returns_the_clis_pair_record(client, photo_dir, tmp_path, torch_home_with_vggface2, age_checkpoint):
    response = _compare(client, photo_dir)
    assert response.status_code == 200
    served = response.json()
    out = tmp_path / "out"
    paths = [photo_dir / "astronaut.jpg", photo_dir / "astronaut_edit.jpg"]
    assert infer.main([*map(str, paths), str(out), "--json", "--ckpt", str(age_checkpoint)]) == infer.EXIT_OK
    written = json.loads((out / "astronaut_vs_astronaut_edit_data.json").read_text())
    assert list(served) == list(written)  # the same fields in the same order
    assert _without(served, "file_1", "file_2", "timings_ms") == _without(written, "file_1", "file_2", "timings_ms")
    assert served["verification"]["is_match"] == (served["verification"]["similarity"] > 0.7)
    assert (served["file_1"], served["file_2"]) == ("astronaut.jpg", "astronaut_edit.jpg")  # labels, not paths


def test_compare_can_return_the_annotated_picture(client, photo_dir, analyzer):
    from face_match_age.detection.imaging import load_image
    from face_match_age.inference.annotate import comparison_image

    result = _compare(client, photo_dir, query="?annotated=true").json()
    picture = Image.open(io.BytesIO(base64.b64decode(result["annotated_jpeg"])))
    assert picture.format == "JPEG"
    photos = [load_image(photo_dir / name) for name in ("astronaut.jpg", "astronaut_edit.jpg")]
    assert picture.size == comparison_image(*photos, result).size
    assert "annotated_jpeg" not in _compare(client, photo_dir).json()  # only on request


def test_age_gives_every_face_as_the_analyzer_does(client, photo_dir, analyzer):
    response = client.post("/age", files={"image": _upload(photo_dir / "two_people.jpg")})
    assert response.status_code == 200
    result = response.json()
    assert len(result["faces"]) == 2
    assert result["faces"] == analyzer.predict_age(photo_dir / "two_people.jpg", all_faces=True)
    assert result["chosen"] == analyzer.analyze(photo_dir / "two_people.jpg", all_faces=True).chosen
    assert result["size"] == [1000, 512]
    assert result["error"] is None
    assert result["age_model"] == {"loaded": True, "reason": None}
    for face in result["faces"]:
        assert face["age_interval"][0] <= face["age"] <= face["age_interval"][1]
        assert face["age_std"] >= 0


def test_embed_gives_the_analyzers_embedding(client, photo_dir, analyzer):
    result = client.post("/embed", files={"image": _upload(photo_dir / "astronaut.jpg")}).json()
    assert len(result["embedding"]) == 512
    expected = analyzer.embed(photo_dir / "astronaut.jpg")
    assert np.array_equal(np.asarray(result["embedding"], dtype=np.float32), expected)
    assert result["face"]["box"] == analyzer.detect(photo_dir / "astronaut.jpg")[0]["box"]


def test_a_photo_without_a_face_is_a_200_with_a_null_face(client, photo_dir):
    compared = _compare(client, photo_dir, "astronaut.jpg", "coffee.jpg")
    assert compared.status_code == 200
    result = compared.json()
    assert result["face_2"] is None and result["verification"] is None
    assert result["face_1"]["box"]
    assert result["error"] == "no face found in coffee.jpg"
    aged = client.post("/age", files={"image": _upload(photo_dir / "coffee.jpg")}).json()
    assert (aged["faces"], aged["chosen"], aged["error"]) == ([], None, "no face found in coffee.jpg")
    embedded = client.post("/embed", files={"image": _upload(photo_dir / "coffee.jpg")}).json()
    assert (embedded["face"], embedded["embedding"]) == (None, None)
    # The annotated picture says so too, as the CLI's does.
    assert _compare(client, photo_dir, "coffee.jpg", "astronaut.jpg", query="?annotated=true").json()["annotated_jpeg"]


def test_concurrent_requests_share_batches_and_get_the_sequential_answers(client, photo_dir):
    jobs = [("astronaut.jpg", "astronaut_edit.jpg"), ("two_people.jpg", "astronaut.jpg"), ("astronaut_edit.jpg",)]
    jobs = jobs * 3

    def ask(job):
        if len(job) == 2:
            return _without(_compare(client, photo_dir, *job).json(), "timings_ms")
        return client.post("/age", files={"image": _upload(photo_dir / job[0])}).json()

    alone = {job: ask(job) for job in set(jobs)}
    before = client.get("/health").json()["batching"]
    answers: list = [None] * len(jobs)
    threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, ask(jobs[i]))) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert answers == [_as_batched(alone[job]) for job in jobs]
    after = client.get("/health").json()["batching"]
    assert after["requests"] - before["requests"] == len(jobs)
    assert after["batches"] - before["batches"] < len(jobs)  # some requests shared a batch
    assert after["largest_batch_requests"] > 1


# --- bad input: a clear HTTP error, and the service goes on -------------------------------------------------------


@functools.cache
def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")  # 400 megapixels in a few kilobytes
    return buffer.getvalue()


BAD_UPLOADS = {
    "not an image": (lambda jpeg: b"just some text, no picture", 415, "not a readable image"),
    "truncated": (lambda jpeg: jpeg[:3000], 400, "truncated"),
    "empty": (lambda jpeg: b"", 400, "is empty"),
    "decompression bomb": (lambda jpeg: _bomb(), 413, "exceeds limit"),
}


@pytest.mark.parametrize("case", BAD_UPLOADS)
@pytest.mark.parametrize("endpoint", ["/compare", "/age", "/embed"])
def test_a_bad_upload_is_a_clear_http_error(client, photo_dir, case, endpoint):
    make, status, needle = BAD_UPLOADS[case]
    bad = ("bad.jpg", make((photo_dir / "astronaut.jpg").read_bytes()), "image/jpeg")
    if endpoint == "/compare":
        files = {"image1": _upload(photo_dir / "astronaut.jpg"), "image2": bad}
    else:
        files = {"image": bad}
    response = client.post(endpoint, files=files)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert needle in detail and "bad.jpg" in detail, detail
    if endpoint == "/compare":
        assert "image2" in detail  # which of the two photos


def _oversize_upload(photo_dir) -> dict:
    noise = np.random.default_rng(0).integers(0, 256, (1400, 1400, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")  # a real image, larger than the limit
    assert len(buffer.getvalue()) > UPLOAD_LIMIT
    return {"image1": _upload(photo_dir / "astronaut.jpg"), "image2": ("big.png", buffer.getvalue(), "image/png")}


def test_an_upload_over_the_limit_is_refused_before_it_is_read(client, photo_dir, analyzer, monkeypatch):
    from face_match_age.service import endpoints

    decoded = []
    monkeypatch.setattr(endpoints, "load_image", lambda *args: decoded.append(args) or pytest.fail("decoded"))
    response = client.post("/compare", files=_oversize_upload(photo_dir))
    assert response.status_code == 413
    assert "upload limit of 3 MB" in response.json()["detail"] and "--max-upload-mb" in response.json()["detail"]
    assert decoded == []


def test_an_upload_without_a_length_is_stopped_as_it_streams_past_the_limit(client, photo_dir):
    """Over real HTTP (a test client reads a streamed body whole before the app sees it): a chunked upload, no
    Content-Length, of far more than the limit is answered 413 once the limit is passed; the app reads no further."""
    import http.client

    from service_app import served

    boundary = "serviceTestBoundary"
    parts = []
    for field, (name, data, kind) in _oversize_upload(photo_dir).items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        parts.append(head.encode() + f"Content-Type: {kind}\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    assert len(body) > UPLOAD_LIMIT + 2**21
    read = []
    app = client.app

    async def counting(scope, receive, send):  # what the service's app is handed of the body
        async def counted():
            message = await receive()
            read.append(len(message.get("body", b"")))
            return message

        await app(scope, counted, send)

    with served(counting) as base:
        connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=60)
        chunks = (body[start : start + 65536] for start in range(0, len(body), 65536))
        try:
            connection.request(
                "POST",
                "/compare",
                body=chunks,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                encode_chunked=True,
            )
        except (BrokenPipeError, ConnectionResetError):
            pass  # the service answered and closed while the rest was still being sent
        response = connection.getresponse()
        assert response.status == 413
        assert "upload limit" in json.loads(response.read())["detail"]
        connection.close()
    assert UPLOAD_LIMIT < sum(read) <= UPLOAD_LIMIT + 2**20  # read up to the limit, then stopped


@pytest.mark.parametrize(
    "files, data, missing",
    [
        ({"photo1": "astronaut.jpg", "photo2": "astronaut_edit.jpg"}, {}, ["image1", "image2"]),
        ({"image1": "astronaut.jpg"}, {}, ["image2"]),
        ({"image2": "astronaut.jpg"}, {"image1": "PATH"}, ["image1"]),  # a path as text: never opened
        ({}, {}, ["image1", "image2"]),
    ],
)
def test_wrong_fields_are_a_422_naming_them(client, photo_dir, files, data, missing):
    uploads = {field: _upload(photo_dir / name) for field, name in files.items()}
    data = {field: str(photo_dir / "astronaut.jpg") for field in data}
    response = client.post("/compare", files=uploads or None, data=data or None)
    assert response.status_code == 422
    assert sorted(error["loc"][-1] for error in response.json()["detail"]) == missing


def test_a_client_file_name_is_only_a_label(client, photo_dir, tmp_path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"not the photo that was sent")
    files = {
        "image1": _upload(photo_dir / "astronaut.jpg", name=str(secret)),
        "image2": _upload(photo_dir / "astronaut_edit.jpg", name="../../../../etc/passwd"),
    }
    result = client.post("/compare", files=files).json()
    assert result["error"] is None  # the bytes sent were analysed, not the files named
    assert (result["file_1"], result["file_2"]) == ("secret.jpg", "passwd")


def test_the_service_goes_on_after_bad_uploads(client, photo_dir):
    for bad in (b"", b"text", _bomb()):
        client.post("/compare", files={"image1": ("x.jpg", bad), "image2": ("y.jpg", bad)})
    assert client.get("/health").json()["status"] == "ok"
    assert _compare(client, photo_dir).json()["verification"] is not None


def test_a_failure_of_the_networks_answers_that_request_and_not_the_next(client, photo_dir, analyzer, monkeypatch):
    import torch

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with monkeypatch.context() as patch:
        patch.setattr(analyzer, "network_outputs", out_of_memory)
        response = _compare(client, photo_dir)
    assert response.status_code == 503
    assert "out of memory" in response.json()["detail"] and "--inference-batch-size" in response.json()["detail"]
    assert _compare(client, photo_dir).status_code == 200


# --- health, docs, the page ---------------------------------------------------------------------------------------


def test_health_and_docs(client, analyzer):
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["threshold"] == {"kind": "fixed", "value": analyzer.config.verification_threshold}
    assert health["max_upload_bytes"] == UPLOAD_LIMIT
    assert health["models"]["verification_weights"] == "vggface2"
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/compare", "/age", "/embed", "/health", "/"} <= set(paths)


class _Page(HTMLParser):
    """What the page's HTML asks the browser to load, its element ids and its inline JSON blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.urls, self.ids, self.json_blocks, self.tags = [], set(), {}, []
        self._json_id = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.ids.add(attrs.get("id"))
        for name in ("src", "href", "action", "srcset", "poster"):
            if attrs.get(name):
                self.urls.append(attrs[name])
        if tag == "script" and attrs.get("type") == "application/json":
            self._json_id = attrs["id"]

    def handle_data(self, data):
        if self._json_id:
            self.json_blocks[self._json_id] = json.loads(data)
            self._json_id = None


def test_the_page_is_one_offline_file_calling_only_its_own_endpoints(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert html == page_html()
    page = _Page()
    page.feed(html)
    # No asset from elsewhere: nothing to fetch but data: URLs, no address of another origin anywhere.
    assert all(url.startswith("data:") for url in page.urls), page.urls
    assert not re.search(r"https?:|//[\w.-]+\.\w", html, re.IGNORECASE)  # no address of another origin
    assert "@import" not in html and "url(" not in html
    # Every call the script makes goes through the endpoints block, whose entries the service answers.
    assert re.findall(r"fetch\(([^,)]+)", html) == ["endpoint.url"]
    openapi = client.get("/openapi.json").json()
    for name, endpoint in page.json_blocks["endpoints"].items():
        path, _, query = endpoint["url"].partition("?")
        assert path.startswith("/") and not path.startswith("//"), name
        operation = openapi["paths"][path][endpoint["method"].lower()]
        parameters = {parameter["name"] for parameter in operation.get("parameters", [])}
        assert {pair.split("=")[0] for pair in query.split("&") if pair} <= parameters, name
        if endpoint["fields"]:
            schema_ref = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
            schema = openapi["components"]["schemas"][schema_ref.split("/")[-1]]
            assert sorted(schema["required"]) == sorted(endpoint["fields"]), name
    # The elements the script looks up exist.
    assert set(re.findall(r'\$\("([\w-]+)"\)', html)) <= page.ids


def test_the_fields_the_page_sends_are_accepted(client, photo_dir):
    """The page's endpoints block, sent as its script sends it (FormData of those fields)."""
    page = _Page()
    page.feed(page_html())
    endpoints = page.json_blocks["endpoints"]
    compare, age = endpoints["compare"], endpoints["age"]
    files = dict(zip(compare["fields"], (_upload(photo_dir / "astronaut.jpg"), _upload(photo_dir / "coffee.jpg"))))
    result = client.post(compare["url"], files=files).json()
    assert {"verification", "face_1", "face_2", "annotated_jpeg", "file_1", "age_model"} <= set(result)
    result = client.post(age["url"], files={age["fields"][0]: _upload(photo_dir / "astronaut.jpg")}).json()
    assert {"faces", "chosen", "size", "error", "age_model"} <= set(result)
    health = client.request(endpoints["health"]["method"], endpoints["health"]["url"]).json()
    assert {"threshold", "age_model", "models"} <= set(health)


# --- the command --------------------------------------------------------------------------------------------------


@pytest.mark.slow  # a Python process of its own
def test_serve_help_is_instant_and_imports_no_framework():
    probe = (
        "import sys; from face_match_age import cli\n"
        "try:\n    cli.main(['serve', '--help'])\nexcept SystemExit as exit:\n    code = exit.code\n"
        "print(code, sorted(m for m in ('torch', 'fastapi', 'uvicorn') if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stderr.strip() == "0 []"
    assert result.stdout.startswith("usage: face-match-age serve")
    for option in ("--host", "--port", "--max-upload-mb", "--ckpt", "--calibration", "--batch-wait-ms"):
        assert option in result.stdout


def test_serve_refuses_a_port_in_use_before_loading_models(capsys):
    from face_match_age import cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        started = time.perf_counter()
        code = cli.main(["serve", "--port", str(taken.getsockname()[1])])
    assert code == 2
    assert time.perf_counter() - started < 5
    err = capsys.readouterr().err
    assert err.startswith("error: cannot listen on 127.0.0.1:") and "choose another --port" in err


def test_serve_refuses_a_broken_calibration_file(tmp_path, capsys):
    from face_match_age import cli

    (tmp_path / "cal.json").write_text("{}")
    assert cli.main(["serve", "--port", "0", "--calibration", str(tmp_path / "cal.json")]) == 3
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.slow  # the service in a process of its own
def test_serve_starts_answers_over_http_with_its_calibration_and_stops_on_ctrl_c(
    tmp_path, photo_dir, torch_home_with_vggface2, age_checkpoint
):
    import requests

    write_band_calibration(tmp_path)
    options = ["--ckpt", str(age_checkpoint), "--calibration", str(tmp_path / "calibration.json")]
    command = [sys.executable, "-c", "import sys; from face_match_age.cli import main; sys.exit(main(sys.argv[1:]))"]
    log = tmp_path / "serve.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen([*command, "serve", "--port", "0", *options], cwd=tmp_path, stderr=sink)
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(r"serving on (http://[\d.:]+)/", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        base = found.group(1)
        assert base.startswith("http://127.0.0.1:")  # this machine only, by default
        names = ("astronaut.jpg", "astronaut_edit.jpg")
        files = {field: (name, (photo_dir / name).read_bytes()) for field, name in zip(("image1", "image2"), names)}
        served = requests.post(f"{base}/compare", files=files, timeout=120).json()
        assert requests.get(f"{base}/", timeout=30).text == page_html()
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
    assert code == 130, log.read_text()
    paths = [str(photo_dir / "astronaut.jpg"), str(photo_dir / "astronaut_edit.jpg")]
    assert infer.main([*paths, str(tmp_path / "out"), "--json", *options]) == 0
    written = json.loads((tmp_path / "out" / "astronaut_vs_astronaut_edit_data.json").read_text())
    assert "threshold_source" in served["verification"]
    assert _without(served, "file_1", "file_2", "timings_ms") == _without(written, "file_1", "file_2", "timings_ms")
