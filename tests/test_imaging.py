import io

import numpy as np
import pytest
import torch
from facenet_pytorch import fixed_image_standardization
from PIL import Image

from face_match_age.detection.imaging import ImageLoadError, face_to_tensor, load_image, tensor_to_image


def _save(image: Image.Image, path, **params):
    image.save(path, **params)
    return path


def test_exif_orientation_is_applied(tmp_path):
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(wide, tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = load_image(path)
    assert upright.size == (20, 40)
    top = np.asarray(upright)[2, 10]
    assert top[2] > 200  # the blue band is now on top
    assert top[0] < 60


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1", "I;16"])
def test_modes_become_8bit_rgb(tmp_path, rgb_photo, mode):
    image = rgb_photo.convert("L").convert(mode) if mode in ("I;16", "1") else rgb_photo.convert(mode)
    loaded = load_image(image)
    assert loaded.mode == "RGB"
    assert loaded.size == rgb_photo.size


def test_16bit_grayscale_keeps_its_contrast(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "scan16.png")
    loaded = np.asarray(load_image(path))
    assert loaded.dtype == np.uint8
    assert list(loaded[0, :, 0]) == [0, 127, 255]


def test_transparent_pixels_become_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    loaded = np.asarray(load_image(_save(rgba, tmp_path / "a.png")))
    assert tuple(loaded[0, 0]) == (10, 20, 30)
    assert tuple(loaded[3, 3]) == (255, 255, 255)
    palette = rgba.convert("P")
    palette.info["transparency"] = palette.getpixel((3, 3))
    assert tuple(np.asarray(load_image(palette))[3, 3]) == (255, 255, 255)


def test_arrays_and_bytes_load_like_files(tmp_path, rgb_photo):
    path = _save(rgb_photo, tmp_path / "p.png")
    expected = np.asarray(load_image(path))
    assert np.array_equal(np.asarray(load_image(np.asarray(rgb_photo))), expected)
    assert np.array_equal(np.asarray(load_image(path.read_bytes())), expected)
    assert load_image(np.asarray(rgb_photo.convert("L"))).mode == "RGB"


@pytest.mark.parametrize("content", [b"", b"not an image at all", None])
def test_unreadable_files_raise_one_clear_error(tmp_path, rgb_photo, content):
    path = tmp_path / "broken.jpg"
    if content is None:  # a truncated JPEG
        buffer = io.BytesIO()
        rgb_photo.save(buffer, format="JPEG")
        content = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=f"cannot read image {path}"):
        load_image(path)


def test_what_is_wrong_with_unreadable_bytes_is_told_by_the_error_type(rgb_photo):
    """The service answers each with its own HTTP status: no image format 415, too many pixels 413, damaged 400."""
    from face_match_age.detection.imaging import ImageTooLargeError, NotAnImageError

    buffer = io.BytesIO()
    rgb_photo.save(buffer, format="JPEG")
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")
    with pytest.raises(NotAnImageError, match=r"cannot read image notes.txt \(upload\): .*no image format"):
        load_image(b"plain text", name="notes.txt (upload)")
    with pytest.raises(ImageTooLargeError, match="exceeds limit"):
        load_image(bomb.getvalue())
    with pytest.raises(ImageLoadError, match="image bytes") as damaged:
        load_image(buffer.getvalue()[:300])
    assert type(damaged.value) is ImageLoadError


def test_missing_file_and_folder_are_named(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "absent.jpg")
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)
    with pytest.raises(ImageLoadError, match="shape"):
        load_image(np.zeros((4, 4, 2), dtype=np.uint8))


def test_face_to_tensor_uses_facenet_standardisation():
    gray = Image.new("RGB", (160, 160), (255, 128, 0))
    tensor = face_to_tensor(gray)
    assert tensor.shape == (3, 160, 160)
    assert tensor.dtype == torch.float32
    assert torch.allclose(tensor[:, 0, 0], torch.tensor([(255 - 127.5) / 128, (128 - 127.5) / 128, -127.5 / 128]))


def test_face_to_tensor_is_the_same_for_pil_and_mtcnn_tensors(rgb_photo):
    pixels = torch.from_numpy(np.array(rgb_photo)).permute(2, 0, 1)
    from_pil = face_to_tensor(rgb_photo)
    from_tensor = face_to_tensor(pixels.float())
    assert from_pil.shape == (3, 160, 160)  # resized from 90x120
    assert torch.allclose(from_pil, from_tensor, atol=1 / 128 + 1e-6)
    square = pixels[:, :90, :90]
    assert torch.equal(face_to_tensor(square, img_size=90), fixed_image_standardization(square.float()))


def test_tensor_to_image_round_trips(rgb_photo):
    face = rgb_photo.resize((160, 160))
    assert np.array_equal(np.asarray(tensor_to_image(face_to_tensor(face))), np.asarray(face))


def test_face_to_tensor_rejects_other_inputs():
    with pytest.raises(TypeError, match="3xHxW"):
        face_to_tensor(torch.zeros(160, 160))
