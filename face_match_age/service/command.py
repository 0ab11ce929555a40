"""Serve face-match-age over HTTP, with a page to use it from a browser: the models load once, then

  GET  /          the page: drop two photos to compare them, or one for its ages
  POST /compare   fields image1, image2: infer.py's pair record (?annotated=true adds the annotated JPEG)
  POST /age       field image: every face with its box, age, uncertainty and 90% interval
  POST /embed     field image: the 512-d embedding of the chosen face
  GET  /health    what runs; /docs: the API's OpenAPI page

It listens on 127.0.0.1 (this machine only) unless --host says otherwise; requests arriving together share
the networks' batches. Ctrl-C stops it once the requests in progress are answered.
"""

# `face-match-age serve ...` (and `infer.py serve ...`) land here from face_match_age/cli.py. Parsing imports
# nothing heavy: --help and a bad option answer at once; torch, the models and FastAPI load after.

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path

from face_match_age.command_line import ConfigArgumentParser, add_config_arguments, help_epilog, parse_config
from face_match_age.error_messages import print_error
from face_match_age.settings import DEVICE_HELP

EXIT_OK, EXIT_USAGE, EXIT_INPUT, EXIT_MODEL, EXIT_INTERRUPTED = 0, 2, 3, 6, 130
SERVE_OPTIONS = (  # infer.py's model and detection options; one process, so no --devices
    "best_checkpoint",
    "verification_threshold",
    "face_selection",
    "mtcnn_margin",
    "mtcnn_min_face_size",
    "detection_max_side",
    "inference_batch_size",
    "inference_precision",
    "channels_last",
    "compile_networks",
)
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 32.0
DEFAULT_BATCH_WAIT_MS = 5.0
DEFAULT_MAX_BATCH_PHOTOS = 32
EXAMPLES = (
    "face-match-age serve                          # http://127.0.0.1:8000/ in a browser: the page",
    "face-match-age serve --port 8080 --ckpt checkpoints/best.ckpt --calibration calibration.json",
    "curl -F image1=@a.jpg -F image2=@b.jpg http://127.0.0.1:8000/compare   # the pair record as JSON",
    "uv run face-match-age serve                   # the same from a clone of the repository",
)
EXIT_CODES = {
    EXIT_OK: "stopped",
    EXIT_USAGE: "bad command line: an unknown option or a bad value; or a --device this machine lacks, or a "
    "--host/--port it cannot listen on (in use, or not an address of this machine)",
    EXIT_INPUT: "an unusable --calibration file",
    EXIT_MODEL: "a model cannot be loaded: an age checkpoint named with --ckpt that is missing, a damaged or "
    "unsafe one, or the verification weights (a missing default checkpoint only leaves the ages empty)",
    EXIT_INTERRUPTED: "stopped by Ctrl-C (SIGTERM: 143), after answering the requests in progress",
}


def build_parser() -> ConfigArgumentParser:
    parser = ConfigArgumentParser(
        prog="face-match-age serve", description=__doc__, epilog=help_epilog(EXAMPLES, EXIT_CODES)
    )
    model, hardware, output = (parser.group(key) for key in ("model", "hardware", "output"))
    output.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 opens the service to every machine that reaches this one",
    )
    output.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on; 0 picks a free one")
    output.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_MB,
        metavar="MB",
        help="largest request body, both photos of /compare together; a larger one is refused (413) as it "
        "arrives, never read whole",
    )
    model.add_argument(
        "--no-age",
        action="store_true",
        help="verification only: no age model is loaded (without one at the default checkpoint and no --ckpt, "
        "that happens anyway, with a note)",
    )
    model.add_argument("--tta", action="store_true", help="average each face with its mirror image")
    model.add_argument(
        "--verify-weights",
        type=Path,
        help="InceptionResnetV1 weight file for verification (default: VGGFace2 from $TORCH_HOME/checkpoints)",
    )
    model.add_argument(
        "--calibration",
        type=Path,
        help="calibration.json from evaluate.py verify --calibrate: a threshold per predicted age gap instead of "
        "--threshold",
    )
    hardware.add_argument("--device", default="auto", help=DEVICE_HELP)
    hardware.add_argument(
        "--batch-wait-ms",
        type=float,
        default=DEFAULT_BATCH_WAIT_MS,
        metavar="MS",
        help="how long the model worker waits for more requests to join a batch (0: only those already queued)",
    )
    hardware.add_argument(
        "--max-batch-photos",
        type=int,
        default=DEFAULT_MAX_BATCH_PHOTOS,
        metavar="N",
        help="most photos in one batch of requests",
    )
    add_config_arguments(parser, SERVE_OPTIONS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, config = parse_config(parser, argv)
    if args.max_upload_mb <= 0 or args.batch_wait_ms < 0 or args.max_batch_photos < 1:
        parser.error("--max-upload-mb must be positive, --batch-wait-ms 0 or more and --max-batch-photos 1 or more")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must lie in 0..65535, not {args.port}")
    try:
        listener = listening_socket(args.host, args.port)  # before the models load: a port in use fails at once
    except OSError as error:
        return _fail(
            f"cannot listen on {args.host}:{args.port} ({error.strerror or error}); choose another --port or --host",
            EXIT_USAGE,
        )
    with listener:
        return _serve(args, config, listener)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (uvicorn listens on it once the models are loaded)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait for old connections
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _serve(args, config, listener: socket.socket) -> int:
    import uvicorn

    from face_match_age.cli import age_model_status, analyzer_factory
    from face_match_age.device import DeviceUnavailableError, resolve_device, resolve_inference_precision
    from face_match_age.match_rule import CalibrationError, MatchRule
    from face_match_age.network.age_network import CheckpointError
    from face_match_age.network.weights import PretrainedWeightsError
    from face_match_age.service.endpoints import ServiceOptions, create_app

    try:
        config = config.replace(
            inference_precision=resolve_inference_precision(config.inference_precision, resolve_device(args.device))
        )
    except DeviceUnavailableError as error:
        return _fail(error, EXIT_USAGE)
    try:
        rule = MatchRule.from_calibration(args.calibration) if args.calibration else None
        rule = rule or MatchRule(config.verification_threshold)
    except CalibrationError as error:
        return _fail(error, EXIT_INPUT)
    age_model = age_model_status(args, config)
    if not age_model["loaded"] and not args.no_age:
        print(f"note: {age_model['reason']}; add --no-age to skip this note", file=sys.stderr)
    print("loading the models...", file=sys.stderr)
    try:
        analyzer = analyzer_factory(args, config, age_model)(device=args.device)
    except (CheckpointError, PretrainedWeightsError) as error:
        return _fail(error, EXIT_MODEL)
    options = ServiceOptions(
        rule=rule,
        age_model=age_model,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        batch_wait_s=args.batch_wait_ms / 1000,
        max_batch_photos=args.max_batch_photos,
    )
    app = create_app(analyzer, options)
    host, port = listener.getsockname()[:2]
    if not ipaddress.ip_address(host).is_loopback:
        print(f"note: listening on {host}, open to other machines; the service has no authentication", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    # Listening before the line below: a client that reads it and connects at once is queued until uvicorn accepts,
    # not refused (uvicorn starts its accept loop only after importing and starting the app).
    listener.listen(2048)
    print(
        f"serving on http://{shown}:{port}/ (the page; the API: http://{shown}:{port}/docs); Ctrl-C stops it",
        file=sys.stderr,
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=30))
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn shut down gracefully, then passes Ctrl-C on
        return EXIT_INTERRUPTED
    return EXIT_OK


def _fail(error: Exception | str, code: int) -> int:
    print_error(error)
    return code
