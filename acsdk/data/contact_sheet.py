"""Contact sheets: one row per sample, normal | mask | result, for people to look at."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw


def contact_sheet(
    rows: Sequence[Sequence[Image.Image]], cell: int = 128, titles: Sequence[str] = (), pad: int = 4
) -> Image.Image:
    cols = max(len(r) for r in rows)
    head = 14 if titles else 0
    sheet = Image.new("RGB", (pad + cols * (cell + pad), head + pad + len(rows) * (cell + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(titles):
        draw.text((pad + c * (cell + pad), 1), title, fill="black")
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            tile = im.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(tile, (pad + c * (cell + pad), head + pad + r * (cell + pad)))
    return sheet
