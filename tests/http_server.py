"""A tiny threaded HTTP server on 127.0.0.1 that honours Range requests and logs what it was asked."""

from __future__ import annotations

import contextlib
import http.server
import threading
from functools import partial
from pathlib import Path


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    log: list[dict]
    cut_first_response: bool = False  # send half of the first full response, then drop the connection

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.log.append({"path": self.path, "range": self.headers.get("Range")})
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if self.cut_first_response and start == 0 and len(self.log) == 1:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the client sees a connection that broke mid-file
            return
        self.wfile.write(data[start:])

    def log_message(self, *args):  # keep test output clean
        pass


@contextlib.contextmanager
def serve_directory(folder: Path, cut_first_response: bool = False):
    log: list[dict] = []
    handler = type("Handler", (_RangeHandler,), {"log": log, "cut_first_response": cut_first_response})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", log
    finally:
        server.shutdown()
        server.server_close()
