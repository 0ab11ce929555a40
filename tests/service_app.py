"""The service for tests: its app over a FaceAnalyzer with the tests' random VGGFace2-layout weights, loaded once
per test module, and a real uvicorn server on a free 127.0.0.1 port for a browser."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest


def load_analyzer(torch_home: Path, age_checkpoint: Path):
    """FaceAnalyzer with the session's test weights (TORCH_HOME is only read while the models load)."""
    from face_match_age.inference.analyzer import FaceAnalyzer

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(torch_home))
        return FaceAnalyzer(age_checkpoint=age_checkpoint)


@contextlib.contextmanager
def served(app):
    """`app` behind uvicorn on a free port of 127.0.0.1, in a thread; yields its base URL. The app's lifespan
    is left to its owner (a TestClient), so stopping this server does not stop the app's model worker."""
    import uvicorn

    from face_match_age.service.command import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
