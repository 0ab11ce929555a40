"""The one image loader and the one face preprocessing, used by training, validation and inference.

`load_image` turns any photo a user may hand us (EXIF-rotated JPEG, grayscale, palette, CMYK,
transparent PNG, 16-bit scan) into an upright 8-bit RGB PIL image, or raises `ImageLoadError`.
`face_to_tensor` turns a face crop into the 3x160x160 tensor InceptionResnetV1 expects, with
facenet-pytorch's `fixed_image_standardization` ((x - 127.5) / 128): the VGGFace2 weights were
trained on that, not on ImageNet mean/std.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import fixed_image_standardization
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

ImageInput = str | Path | bytes | Image.Image | np.ndarray

# Background for transparent pixels: what is under a transparent pixel is arbitrary, white is neutral.
_ALPHA_BACKGROUND = (255, 255, 255)


class ImageLoadError(ValueError):
    """A file or object that cannot be read as an image (damaged, truncated, empty...)."""


class NotAnImageError(ImageLoadError):
    """Bytes that no image format PIL knows starts with: a text file, a PDF, a video."""


class ImageTooLargeError(ImageLoadError):
    """An image with more pixels than PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS), refused before
    its pixels are decoded: a few kilobytes of PNG can unpack into gigabytes."""


ACCEPTED_PHOTOS = "a file path (str or pathlib.Path), image bytes, a PIL image, or an HxWx3 uint8 numpy array"


def _require_photo_type(source: object) -> None:
    """A TypeError saying what a photo may be, for anything else (None, a number, a list, a torch tensor):
    raised at once, since it is a slip in the calling code, not a photo that failed."""
    if isinstance(source, (str, Path, bytes, Image.Image, np.ndarray)):
        return
    hint = ""
    if isinstance(source, torch.Tensor):
        hint = " (a CxHxW tensor becomes one with tensor.permute(1, 2, 0).numpy(), as uint8 0..255)"
    elif isinstance(source, (list, tuple)):
        hint = " (for several photos use analyze_many)"
    raise TypeError(f"a photo must be {ACCEPTED_PHOTOS}, not {type(source).__name__}{hint}")


def load_image(source: ImageInput, name: str | None = None) -> Image.Image:
    """Read `source` (path, bytes, PIL image or HxW[x3|4] uint8 array) as an upright 8-bit RGB image; another
    type is a TypeError, an empty image an ImageLoadError (NotAnImageError for bytes of no image format,
    ImageTooLargeError past PIL's pixel limit). `name` labels the photo in error messages (default: the path,
    or what the object is), as the service names an upload by its file name."""
    _require_photo_type(source)
    if isinstance(source, Image.Image):
        image, name = source, name or "PIL image"
    elif isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    else:
        image, name = _open(source, name)
    if 0 in image.size:  # MTCNN would divide by zero on it
        raise ImageLoadError(f"cannot read image {name}: it is empty ({image.size[0]}x{image.size[1]} pixels)")
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001  a broken EXIF block should not cost us an otherwise good photo
        pass
    return _to_rgb(image, name)


def _open(source: str | Path | bytes, name: str | None = None) -> tuple[Image.Image, str]:
    name = name or ("image bytes" if isinstance(source, bytes) else str(source))
    data = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            # Huge images are refused below rather than merely warned about: inputs are untrusted.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(data)
            image.load()  # decode now, so a truncated file fails here and not deep inside a model
    except FileNotFoundError:
        raise ImageLoadError(f"cannot read image {name}: no such file") from None
    except IsADirectoryError:
        raise ImageLoadError(f"cannot read image {name}: it is a folder, not a file") from None
    except UnidentifiedImageError:  # PIL's own text names a BytesIO object for bytes: say what it means instead
        raise NotAnImageError(
            f"cannot read image {name}: not a readable image (in no image format PIL reads)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(f"cannot read image {name}: not a readable image ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"cannot read image {name}: not a readable image ({error})") from None
    return image, name


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit scans: keep the top 8 bits rather than letting convert("L") clip everything to white.
        values = np.asarray(image, dtype=np.float64)
        scale = 257.0 if values.max(initial=0) > 255 else 1.0
        return Image.fromarray(np.clip(values / scale, 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8)).convert("RGB")
    if (mode == "P" and "transparency" in image.info) or mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise ImageLoadError(f"cannot read image {name}: unsupported image mode {mode} ({error})") from None


def _array_to_rgb(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageLoadError(
            f"cannot read image array of shape {array.shape} and dtype {array.dtype}: "
            "expected uint8 HxW, HxWx3 (RGB) or HxWx4 (RGBA)"
        )
    if array.size == 0:  # MTCNN would divide by zero on it
        raise ImageLoadError(f"cannot read image array of shape {array.shape}: it is empty")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return _to_rgb(Image.fromarray(array), "array")


def face_to_tensor(face: Image.Image | torch.Tensor, img_size: int = 160) -> torch.Tensor:
    """A face crop as the standardised 3 x img_size x img_size float tensor the networks take.

    `face` is a PIL image (any mode) or a 3xHxW tensor of pixel values 0..255 (uint8 or float, as
    MTCNN returns with post_process=False). It is resized when its side differs from `img_size`.
    """
    if isinstance(face, Image.Image):
        pixels = TF.pil_to_tensor(_to_rgb(face, "face crop"))
    elif isinstance(face, torch.Tensor) and face.ndim == 3 and face.shape[0] == 3:
        pixels = face
    else:
        raise TypeError(
            f"face_to_tensor takes a PIL image or a 3xHxW tensor, got {type(face).__name__}"
            f"{' of shape ' + str(tuple(face.shape)) if hasattr(face, 'shape') else ''}"
        )
    if tuple(pixels.shape[1:]) != (img_size, img_size):
        pixels = TF.resize(pixels, [img_size, img_size], antialias=True)
    return fixed_image_standardization(pixels.float())


def tensor_to_image(face: torch.Tensor) -> Image.Image:
    """Undo `face_to_tensor`: a standardised 3xHxW tensor back to a viewable RGB image."""
    pixels = (face.detach().float().cpu() * 128.0 + 127.5).clamp(0, 255).round().to(torch.uint8)
    return TF.to_pil_image(pixels)
