"""The floor for bench/infer.py: the least code that does infer.py's pair work with facenet-pytorch.

    uv run python -m bench.floor IMG1 IMG2 OUT_DIR AGE_CKPT      # one pair, cold: process start to JSON

`pair` does one pair as infer.py does (a JPG and a JSON); `batched_pairs`, the floor of bench/options.py,
does many pairs batched (MTCNN over chunks of photos, both networks over chunks of faces) and keeps the
results in memory, as FaceAnalyzer.analyze_many does.

It calls MTCNN and InceptionResnetV1 directly (the age model is the same InceptionResnetV1 plus the
same head, loaded from the checkpoint's state dict) with none of the toolkit's checks or options; it
borrows only network_state_dict, which finds the weights in checkpoints of any layout.
Deliberately bare: it is a yardstick, not a tool.
"""

import json
import sys
from pathlib import Path

import torch
from facenet_pytorch import MTCNN, InceptionResnetV1
from PIL import Image, ImageDraw

from face_match_age.network.age_network import network_state_dict


def load_models(age_checkpoint, device="cpu"):
    mtcnn = MTCNN(image_size=160, margin=14, device=device)
    backbone = InceptionResnetV1()
    head = torch.nn.Sequential(
        torch.nn.Dropout(0.2),
        torch.nn.Linear(512, 256),
        torch.nn.ReLU(),
        torch.nn.BatchNorm1d(256),
        torch.nn.Linear(256, 101),
    )
    state = torch.load(age_checkpoint, map_location=device, weights_only=True)["state_dict"]
    backbone.load_state_dict(network_state_dict(state, "backbone"))
    head.load_state_dict(network_state_dict(state, "head"))
    age_model = torch.nn.Sequential(backbone, head).to(device).eval()
    verifier = InceptionResnetV1(pretrained="vggface2").to(device).eval()
    return mtcnn, age_model, verifier


@torch.inference_mode()
def faces_of(mtcnn, images):
    """One standardised face crop per photo (MTCNN's own post-processing), and its box."""
    crops, boxes = [], []
    for image in images:
        box, _ = mtcnn.detect(image)
        crops.append(mtcnn.extract(image, box[:1], None))  # detect once, crop the first face
        boxes.append(box[0].tolist())
    return torch.stack(crops), boxes


@torch.inference_mode()
def ages_and_embeddings(age_model, verifier, faces):
    ages = age_model(faces).softmax(1) @ torch.arange(101.0, device=faces.device)
    return ages.tolist(), verifier(faces)


def batched_pairs(models, photos, photos_per_chunk=16, faces_per_batch=32, threshold=0.7) -> list[dict]:
    """Ages, similarity and verdict of the pairs (photos[0], photos[1]), (photos[2], photos[3])...; MTCNN's batch
    mode needs the photos of a chunk to share one size."""
    mtcnn, age_model, verifier = models
    faces = []
    for start in range(0, len(photos), photos_per_chunk):
        images = [Image.open(path).convert("RGB") for path in photos[start : start + photos_per_chunk]]
        with torch.inference_mode():
            boxes, _ = mtcnn.detect(images)
            faces += mtcnn.extract(images, [box[:1] for box in boxes], None)  # the first face of each photo
    faces = torch.stack(faces).to(next(verifier.parameters()).device)
    ages, embeddings = [], []
    for start in range(0, len(faces), faces_per_batch):
        batch_ages, batch_embeddings = ages_and_embeddings(age_model, verifier, faces[start : start + faces_per_batch])
        ages += batch_ages
        embeddings.append(batch_embeddings)
    embeddings = torch.cat(embeddings)
    similarities = torch.nn.functional.cosine_similarity(embeddings[0::2], embeddings[1::2]).tolist()
    return [
        {"ages": ages[2 * number : 2 * number + 2], "similarity": similarity, "is_match": similarity > threshold}
        for number, similarity in enumerate(similarities)
    ]


def pair(models, path_1, path_2, out_dir):
    mtcnn, age_model, verifier = models
    images = [Image.open(path_1).convert("RGB"), Image.open(path_2).convert("RGB")]
    faces, boxes = faces_of(mtcnn, images)
    ages, embeddings = ages_and_embeddings(age_model, verifier, faces.to(next(verifier.parameters()).device))
    similarity = torch.nn.functional.cosine_similarity(embeddings[:1], embeddings[1:]).item()
    canvas = Image.new("RGB", (images[0].width + images[1].width, max(i.height for i in images)))
    for offset, image, box in ((0, images[0], boxes[0]), (images[0].width, images[1], boxes[1])):
        canvas.paste(image, (offset, 0))
        ImageDraw.Draw(canvas).rectangle([box[0] + offset, box[1], box[2] + offset, box[3]], outline=(255, 210, 0))
    stem = f"{Path(path_1).stem}_vs_{Path(path_2).stem}"
    canvas.save(Path(out_dir) / f"{stem}_result.jpg", quality=92)
    result = {
        "face_1": {"age": ages[0], "box": boxes[0]},  # the result schema's names (inference/records.py)
        "face_2": {"age": ages[1], "box": boxes[1]},
        "verification": {"is_match": similarity > 0.7, "similarity": similarity},
    }
    (Path(out_dir) / f"{stem}_data.json").write_text(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    # The toolkit's parser, for a --help like every script's; it imports nothing the floor would not.
    from bench.cli import benchmark_parser

    parser = benchmark_parser(
        "python -m bench.floor",
        __doc__,
        ["uv run python -m bench.floor IMG1 IMG2 OUT_DIR AGE_CKPT      # one pair, cold: process start to JSON"],
        {0: "the pair's JPG and JSON written", 1: "any failure (a traceback: the floor has no checks)"},
    )
    data = parser.group("data")
    data.add_argument("first", metavar="IMG1", help="first photo")
    data.add_argument("second", metavar="IMG2", help="second photo")
    parser.group("output").add_argument("out", metavar="OUT_DIR", help="folder for the JPG and the JSON")
    parser.group("model").add_argument("checkpoint", metavar="AGE_CKPT", help="age checkpoint (train.py's)")
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    pair(load_models(args.checkpoint), args.first, args.second, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
