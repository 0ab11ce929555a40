"""The annotated pictures: for a pair, both photos side by side, faces boxed and labelled with age and
uncertainty, under a banner with the verdict, the similarity and the threshold; for `age`, one photo with
every face boxed and labelled "42 ± 5 years"."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

PANEL_HEIGHT = 480  # both photos are scaled to this height so they sit side by side
# A banner or panorama scaled to that height would be tens of thousands of pixels wide, past what JPEG can
# store (65535); such photos are scaled to this width instead, on a panel wide enough for its label.
MAX_PANEL_WIDTH, MIN_PANEL_WIDTH = 4 * PANEL_HEIGHT, PANEL_HEIGHT // 2
BANNER_HEIGHT = 56
GAP = 8
MATCH_COLOUR, NO_MATCH_COLOUR, NEUTRAL_COLOUR = (40, 170, 70), (200, 50, 50), (90, 90, 90)


def comparison_image(photo_1: Image.Image | None, photo_2: Image.Image | None, result: dict) -> Image.Image:
    """Draw `result` (infer's pair JSON) over the two photos; a missing photo or face is said so in its panel."""
    no_age_model = (result.get("age_model") or {}).get("loaded") is False
    panels = [
        _panel(photo, result.get(f"face_{n}"), result.get(f"faces_{n}"), no_age_model)
        for n, photo in ((1, photo_1), (2, photo_2))
    ]
    width = panels[0].width + GAP + panels[1].width
    canvas = Image.new("RGB", (width, BANNER_HEIGHT + PANEL_HEIGHT), (255, 255, 255))
    canvas.paste(panels[0], (0, BANNER_HEIGHT))
    canvas.paste(panels[1], (panels[0].width + GAP, BANNER_HEIGHT))
    _banner(ImageDraw.Draw(canvas), width, result)
    return canvas


def _panel(
    photo: Image.Image | None, face: dict | None, all_faces: list[dict] | None, no_age_model: bool = False
) -> Image.Image:
    if photo is None:
        panel = Image.new("RGB", (PANEL_HEIGHT, PANEL_HEIGHT), (235, 235, 235))
        _label(ImageDraw.Draw(panel), (10, PANEL_HEIGHT // 2), "photo unreadable", NO_MATCH_COLOUR)
        return panel
    scale = min(PANEL_HEIGHT / photo.height, MAX_PANEL_WIDTH / photo.width)
    shown = photo.resize(
        (max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.Resampling.BILINEAR
    )
    if shown.height == PANEL_HEIGHT and shown.width >= MIN_PANEL_WIDTH:
        panel = shown
    else:
        panel = Image.new("RGB", (max(shown.width, MIN_PANEL_WIDTH), PANEL_HEIGHT), (235, 235, 235))
        panel.paste(shown, (0, 0))
    draw = ImageDraw.Draw(panel)
    if face is None:
        _label(draw, (10, 10), "no face found", NO_MATCH_COLOUR)
        return panel
    for other in all_faces or []:  # with --all-faces the other faces get a thin grey box
        draw.rectangle([round(v * scale) for v in other["box"]], outline=NEUTRAL_COLOUR, width=1)
    box = [round(v * scale) for v in face["box"]]
    draw.rectangle(box, outline=(255, 210, 0), width=3)
    if face.get("age") is not None:
        text = f"{face['age']:.0f} ± {face['age_std']:.0f}"
        _label(draw, (box[0], max(0, box[1] - 30)), text, (0, 0, 0))
    elif no_age_model:  # say why the box has no age, rather than leave a reader guessing
        _label(draw, (box[0], max(0, box[1] - 30)), "age: no model", NEUTRAL_COLOUR)
    return panel


def _banner(draw: ImageDraw.ImageDraw, width: int, result: dict) -> None:
    verification = result.get("verification")
    if verification is None:
        colour, text = NEUTRAL_COLOUR, f"NO DECISION: {result.get('error') or 'face missing'}"
    else:
        colour = MATCH_COLOUR if verification["is_match"] else NO_MATCH_COLOUR
        verdict = "MATCH" if verification["is_match"] else "NO MATCH"
        text = (
            f"{verdict}   similarity {verification['similarity']:.3f}   threshold {verification['threshold_used']:.3f}"
        )
    draw.rectangle((0, 0, width, BANNER_HEIGHT), fill=colour)
    draw.text((12, 12), text[:120], fill=(255, 255, 255), font=ImageFont.load_default(size=26))


def _label(draw: ImageDraw.ImageDraw, corner: tuple[int, int], text: str, background, size: int = 22) -> None:
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = draw.textbbox(corner, text, font=font)
    draw.rectangle((left - 4, top - 4, right + 4, bottom + 4), fill=background)
    draw.text(corner, text, fill=(255, 255, 255), font=font)


AGES_MAX_SIDE = 1600  # a larger photo is shrunk to this for the picture of `age` (the JSON keeps its pixels)


def ages_image(photo: Image.Image, result: dict) -> Image.Image:
    """Draw `result` (the age JSON of one photo: infer.py age) over the photo: every face boxed and labelled
    "42 ± 5 years"; a photo without a face says so."""
    scale = min(1.0, AGES_MAX_SIDE / max(photo.size))
    size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
    picture = photo.convert("RGB").resize(size, Image.Resampling.BILINEAR) if scale < 1 else photo.convert("RGB")
    draw = ImageDraw.Draw(picture)
    text_size = max(14, round(max(picture.size) / 40))
    if not result.get("faces"):
        _label(draw, (10, 10), "no face found", NO_MATCH_COLOUR, text_size)
        return picture
    for face in result["faces"]:
        box = [round(v * scale) for v in face["box"]]
        draw.rectangle(box, outline=(255, 210, 0), width=max(2, text_size // 8))
        if face.get("age") is not None:
            text = f"{face['age']:.0f} ± {face['age_std']:.0f} years"
        else:
            text = "age: no model"
        _label(draw, (box[0], max(0, box[1] - round(text_size * 1.4))), text, (0, 0, 0), text_size)
    return picture
