"""Draw the default characters' avatars: `python -m limelight.characters.defaults.make_avatars`.

Each avatar is a 256x256 geometric portrait in the character's palette, drawn with Pillow
at 4x and scaled down for smooth edges, then reduced to a 256-colour palette so each file
stays well under 60 KB.  Deterministic: the same Pillow draws the same bytes.  Run it after
changing a drawing; the PNGs beside it are what ships.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
SCALE = 4
S = SIZE * SCALE  # drawing canvas side
Colour = tuple[int, int, int]
Painter = Callable[[Image.Image, ImageDraw.ImageDraw], None]


def gradient(top: Colour, bottom: Colour) -> Image.Image:
    column = Image.new("RGB", (1, S))
    for y in range(S):
        t = y / (S - 1)
        column.putpixel(
            (0, y), tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        )
    return column.resize((S, S))


def glow(image: Image.Image, centre: tuple[float, float], radius: float, colour: Colour) -> None:
    """Blend a soft disc of `colour` onto `image`."""
    mask = Image.new("L", (S, S), 0)
    x, y = centre
    ImageDraw.Draw(mask).ellipse((x - radius, y - radius, x + radius, y + radius), fill=150)
    mask = mask.filter(ImageFilter.GaussianBlur(radius / 2))
    image.paste(Image.new("RGB", (S, S), colour), (0, 0), mask)


def box(cx: float, cy: float, rx: float, ry: float) -> tuple[float, float, float, float]:
    return (cx - rx, cy - ry, cx + rx, cy + ry)


def bust(draw: ImageDraw.ImageDraw, skin: Colour, clothes: Colour, head_y: float = 0.42) -> None:
    """Shoulders, a head and two eyes, centred; proportions as fractions of the canvas."""
    draw.ellipse(box(S * 0.5, S * 1.02, S * 0.40, S * 0.30), fill=clothes)
    draw.rectangle(box(S * 0.5, S * 0.66, S * 0.07, S * 0.08), fill=skin)
    draw.ellipse(box(S * 0.5, S * head_y, S * 0.16, S * 0.20), fill=skin)
    for dx in (-0.06, 0.06):
        draw.ellipse(
            box(S * (0.5 + dx), S * (head_y + 0.01), S * 0.016, S * 0.02), fill=(45, 35, 35)
        )


def lumi(image: Image.Image, draw: ImageDraw.ImageDraw) -> None:
    glow(image, (S * 0.5, S * 0.45), S * 0.42, (255, 214, 120))
    draw.polygon([(S * 0.38, 0), (S * 0.62, 0), (S * 0.9, S), (S * 0.1, S)], fill=(70, 60, 140))
    for r, colour in ((0.34, (120, 110, 220)), (0.27, (250, 200, 110)), (0.22, (255, 236, 170))):
        draw.ellipse(box(S * 0.5, S * 0.48, S * r, S * r), fill=colour)
    for dx in (-0.07, 0.07):
        draw.ellipse(box(S * (0.5 + dx), S * 0.46, S * 0.025, S * 0.04), fill=(60, 40, 90))
    draw.arc(box(S * 0.5, S * 0.52, S * 0.08, S * 0.06), 20, 160, fill=(60, 40, 90), width=S // 60)


def juniper(image: Image.Image, draw: ImageDraw.ImageDraw) -> None:
    for i in range(14):  # leaves in a ring
        angle = i * 2 * math.pi / 14
        cx, cy = S * (0.5 + 0.44 * math.cos(angle)), S * (0.5 + 0.44 * math.sin(angle))
        leaf = Image.new("L", (S // 4, S // 9), 0)
        ImageDraw.Draw(leaf).ellipse((0, 0, S // 4 - 1, S // 9 - 1), fill=255)
        leaf = leaf.rotate(-math.degrees(angle) + 90, expand=True)
        shade = (96 + (i % 3) * 24, 150 + (i % 2) * 20, 90)
        image.paste(
            Image.new("RGB", leaf.size, shade),
            (int(cx) - leaf.width // 2, int(cy) - leaf.height // 2),
            leaf,
        )
    for dx, dy in ((-0.13, -0.12), (0.0, -0.18), (0.13, -0.12), (-0.17, 0.0), (0.17, 0.0)):
        draw.ellipse(box(S * (0.5 + dx), S * (0.42 + dy), S * 0.1, S * 0.1), fill=(150, 140, 135))
    bust(draw, (232, 196, 168), (190, 100, 70))
    for dx in (-0.06, 0.06):  # reading glasses pushed up into the curls
        draw.ellipse(
            box(S * (0.5 + dx), S * 0.28, S * 0.045, S * 0.035), outline=(60, 50, 40), width=S // 90
        )


def osric(image: Image.Image, draw: ImageDraw.ImageDraw) -> None:
    draw.polygon(
        [(S * 0.15, S * 0.2), (S * 1.1, S * -0.05), (S * 1.1, S * 0.35)], fill=(230, 200, 110)
    )
    glow(image, (S * 0.15, S * 0.2), S * 0.12, (255, 240, 180))
    draw.rectangle((0, S * 0.8, S, S), fill=(40, 60, 80))
    bust(draw, (214, 170, 140), (215, 205, 180), head_y=0.44)
    for row in range(5):  # cable-knit ridges
        y = S * (0.8 + row * 0.04)
        draw.line((S * 0.2, y, S * 0.8, y), fill=(190, 178, 150), width=S // 120)
    white, skin = (240, 240, 235), (214, 170, 140)
    draw.ellipse(box(S * 0.5, S * 0.57, S * 0.175, S * 0.15), fill=white)  # beard
    draw.ellipse(box(S * 0.5, S * 0.45, S * 0.12, S * 0.08), fill=skin)  # the face inside it
    draw.ellipse(box(S * 0.5, S * 0.525, S * 0.075, S * 0.022), fill=white)  # moustache
    for dx in (-0.055, 0.055):
        draw.ellipse(box(S * (0.5 + dx), S * 0.44, S * 0.016, S * 0.02), fill=(45, 35, 35))
    draw.pieslice(box(S * 0.5, S * 0.33, S * 0.17, S * 0.13), 180, 360, fill=(40, 50, 70))


def vesper(image: Image.Image, draw: ImageDraw.ImageDraw) -> None:
    for i in range(0, S, S // 16):  # perspective grid
        draw.line(
            (i, S * 0.75, S * 0.5 + (i - S * 0.5) * 2.5, S), fill=(90, 40, 140), width=S // 200
        )
    for i in range(6):
        y = S * (0.75 + 0.25 * (i / 6) ** 1.6)
        draw.line((0, y, S, y), fill=(90, 40, 140), width=S // 200)
    for i in range(40):  # stars, placed by a fixed rule
        x, y = (i * 379) % S, (i * 211) % int(S * 0.6)
        draw.ellipse(box(x, y, S / 300 + i % 3, S / 300 + i % 3), fill=(220, 220, 255))
    draw.rounded_rectangle(box(S * 0.5, S * 0.88, S * 0.3, S * 0.16), S // 20, fill=(70, 80, 100))
    draw.rounded_rectangle(box(S * 0.5, S * 0.45, S * 0.2, S * 0.18), S // 14, fill=(150, 160, 180))
    draw.rounded_rectangle(box(S * 0.5, S * 0.43, S * 0.16, S * 0.04), S // 40, fill=(40, 240, 230))
    glow(image, (S * 0.5, S * 0.43), S * 0.1, (40, 240, 230))
    draw.line((S * 0.5, S * 0.27, S * 0.5, S * 0.17), fill=(150, 160, 180), width=S // 80)
    draw.ellipse(box(S * 0.5, S * 0.16, S * 0.025, S * 0.025), fill=(255, 90, 120))


def odile(image: Image.Image, draw: ImageDraw.ImageDraw) -> None:
    for i in range(12):  # curtain folds
        x = i * S / 12
        draw.rectangle((x, 0, x + S / 24, S), fill=(120, 20, 40))
    glow(image, (S * 0.5, S * 0.95), S * 0.35, (255, 230, 180))
    draw.ellipse(box(S * 0.5, S * 0.2, S * 0.09, S * 0.08), fill=(200, 200, 210))  # hair bun
    bust(draw, (236, 204, 190), (40, 30, 50), head_y=0.4)
    draw.pieslice(box(S * 0.5, S * 0.38, S * 0.17, S * 0.2), 180, 360, fill=(200, 200, 210))
    draw.polygon(
        [(S * 0.25, S * 0.72), (S * 0.75, S * 0.9), (S * 0.7, S * 1.0), (S * 0.2, S * 0.8)],
        fill=(140, 70, 200),
    )


def rhea(image: Image.Image, draw: ImageDraw.ImageDraw) -> None:
    draw.rectangle(box(S * 0.8, S * 0.2, S * 0.12, S * 0.05), fill=(255, 80, 170))
    glow(image, (S * 0.8, S * 0.2), S * 0.2, (255, 80, 170))
    for i in range(60):  # rain
        x, y = (i * 173) % S, (i * 97) % S
        draw.line((x, y, x - S * 0.03, y + S * 0.09), fill=(120, 160, 180), width=S // 256)
    bust(draw, (205, 160, 125), (55, 55, 60), head_y=0.43)
    draw.polygon(
        [(S * 0.3, S * 0.7), (S * 0.44, S * 0.62), (S * 0.46, S * 0.85)], fill=(75, 75, 82)
    )
    draw.polygon(
        [(S * 0.7, S * 0.7), (S * 0.56, S * 0.62), (S * 0.54, S * 0.85)], fill=(75, 75, 82)
    )
    draw.pieslice(box(S * 0.5, S * 0.38, S * 0.175, S * 0.17), 170, 370, fill=(30, 25, 25))
    draw.line((S * 0.53, S * 0.37, S * 0.57, S * 0.41), fill=(150, 110, 90), width=S // 120)


AVATARS: dict[str, tuple[Colour, Colour, Painter]] = {
    "lumi": ((40, 30, 90), (20, 110, 130), lumi),
    "juniper-vale": ((215, 225, 190), (120, 160, 110), juniper),
    "osric-thorne": ((20, 30, 60), (70, 90, 110), osric),
    "vesper-9": ((5, 5, 15), (50, 10, 70), vesper),
    "odile-fairweather": ((70, 10, 25), (150, 30, 50), odile),
    "rhea-castellanos": ((10, 40, 50), (5, 10, 15), rhea),
}


def render(slug: str) -> Image.Image:
    top, bottom, paint = AVATARS[slug]
    image = gradient(top, bottom)
    paint(image, ImageDraw.Draw(image))
    small = image.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return small.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def main() -> None:
    folder = Path(__file__).resolve().parent
    for slug in AVATARS:
        path = folder / f"{slug}.png"
        render(slug).save(path, "PNG", optimize=True)
        print(f"{path.name}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
