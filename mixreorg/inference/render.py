"""The picture of a segmentation: the image and the overlay side by side, a legend below.

Both panels are drawn at a readable size (a 64 x 48 input is enlarged, a 6000 px photo reduced), the regions are
filled with their label's colour (torchvision's ``draw_segmentation_masks``), outlined in the full colour, and
the larger regions carry their label's name on a tag of that colour; the legend's swatches use the same full
colour, so a swatch matches the outline and the tag of its region. Background pixels keep the image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

MIN_SIDE = 512  # each panel's short side is at least this many pixels ...
MAX_SIDE = 1600  # ... and its long side at most this many (the long side wins for very elongated images)
FILL_ALPHA = 0.55
TAG_MIN_AREA = 0.004  # a region needs this share of the image to carry a tag
TAGS_PER_LABEL = 3
GAP, WHITE, BLACK = 8, (255, 255, 255), (0, 0, 0)


def panel_size(height: int, width: int) -> tuple[int, int]:
    scale = max(1.0, MIN_SIDE / min(height, width))
    scale = min(scale, MAX_SIDE / max(height, width)) if max(height, width) * scale > MAX_SIDE else scale
    return max(1, round(height * scale)), max(1, round(width * scale))


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def outline(label_map: torch.Tensor, width: int) -> torch.Tensor:
    """Boolean [H, W]: pixels within ``width`` of a boundary between two labels (each side marks its own)."""
    edge = torch.zeros_like(label_map, dtype=torch.bool)
    edge[:, 1:] |= label_map[:, 1:] != label_map[:, :-1]
    edge[:, :-1] |= label_map[:, :-1] != label_map[:, 1:]
    edge[1:, :] |= label_map[1:, :] != label_map[:-1, :]
    edge[:-1, :] |= label_map[:-1, :] != label_map[1:, :]
    if width > 1:
        grown = F.max_pool2d(edge[None, None].float(), kernel_size=2 * (width // 2) + 1, stride=1,
                             padding=width // 2)
        edge = grown[0, 0] > 0
    return edge


def _text_color(color) -> tuple[int, int, int]:
    red, green, blue = (int(c) for c in color)
    return BLACK if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else WHITE


def tag_positions(label_map: np.ndarray, index: int, limit: int = TAGS_PER_LABEL) -> list[tuple[int, int]]:
    """(row, col) of the points deepest inside the largest regions of label ``index`` (on ``label_map``)."""
    from scipy import ndimage

    components, count = ndimage.label(label_map == index)
    if count == 0:
        return []
    areas = np.bincount(components.ravel())[1:]
    order = [k + 1 for k in np.argsort(-areas)[:limit] if areas[k] >= TAG_MIN_AREA * label_map.size]
    points = []
    for component in order:
        depth = ndimage.distance_transform_edt(np.pad(components == component, 1))[1:-1, 1:-1]
        points.append(tuple(int(v) for v in np.unravel_index(int(depth.argmax()), depth.shape)))
    return points


def _tags(draw: ImageDraw.ImageDraw, small_map: np.ndarray, offset: int, labels: list[str], colors: np.ndarray,
          present: list[int], typeface, size: tuple[int, int]) -> None:
    """Name tags on the overlay panel (which starts ``offset`` pixels right and is ``size`` large), one per large
    region, skipping any that would cover an earlier tag."""
    row_scale, col_scale = size[0] / small_map.shape[0], size[1] / small_map.shape[1]
    placed: list[tuple[float, float, float, float]] = []
    pad = max(2, typeface.size // 4) if hasattr(typeface, "size") else 3
    for index in present:
        for row, col in tag_positions(small_map, index):
            left, top, right, bottom = draw.textbbox((0, 0), labels[index], font=typeface)
            w, h = right - left + 2 * pad, bottom - top + 2 * pad
            x = min(max((col + 0.5) * col_scale - w / 2, 0), size[1] - w) + offset
            y = min(max((row + 0.5) * row_scale - h / 2, 0), size[0] - h)
            box = (x, y, x + w, y + h)
            if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                continue
            placed.append(box)
            color = tuple(int(c) for c in colors[index])
            draw.rectangle(box, fill=color, outline=_text_color(color))
            draw.text((x + pad - left, y + pad - top), labels[index], fill=_text_color(color), font=typeface)


def _legend(entries: list[tuple[np.ndarray, str]], width: int, typeface, font_size: int) -> Image.Image:
    """Rows of swatch + text, wrapped to ``width``."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_height, spacing = font_size + font_size // 2, font_size
    cells = [(color, text, int(font_size * 1.5 + measure.textlength(text, font=typeface))) for color, text in entries]
    rows, x = 1, spacing
    for _, _, cell in cells:
        if x + cell > width and x > spacing:
            rows, x = rows + 1, spacing
        x += cell + spacing
    legend = Image.new("RGB", (width, rows * row_height + font_size // 2), WHITE)
    draw = ImageDraw.Draw(legend)
    x, y = spacing, font_size // 4
    for color, text, cell in cells:
        if x + cell > width and x > spacing:
            x, y = spacing, y + row_height
        draw.rectangle([x, y, x + font_size, y + font_size], fill=tuple(int(c) for c in color), outline=BLACK)
        draw.text((x + font_size * 1.5, y), text, fill=BLACK, font=typeface)
        x += cell + spacing
    return legend


def render_overlay(image: np.ndarray, label_map: np.ndarray, labels: list[str], colors: np.ndarray,
                   background_first: bool = False) -> Image.Image:
    """[H, W, 3] uint8 image and [H, W] label indices -> the side-by-side picture with outlines, tags and legend."""
    from torchvision.utils import draw_segmentation_masks

    height, width = panel_size(*label_map.shape)
    picture = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    scaled = torch.from_numpy(np.array(Image.fromarray(label_map.astype(np.int32)).resize(
        (width, height), Image.Resampling.NEAREST))).long()
    counts = np.bincount(label_map.ravel(), minlength=len(labels))
    present = [i for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    painted = [i for i in present if not (background_first and i == 0)]
    pixels = torch.from_numpy(np.array(picture)).permute(2, 0, 1).contiguous()
    if painted:
        masks = torch.stack([scaled == i for i in painted])
        pixels = draw_segmentation_masks(pixels, masks, alpha=FILL_ALPHA,
                                         colors=[tuple(int(c) for c in colors[i]) for i in painted])
    edges = outline(scaled, max(2, min(height, width) // 200))
    if background_first:
        edges &= scaled != 0
    pixels = pixels.permute(1, 2, 0).numpy().copy()
    pixels[edges.numpy()] = colors[scaled[edges].numpy()]
    font_size = max(14, min(height, width) // 28)
    typeface = font(font_size)
    canvas = Image.new("RGB", (2 * width + GAP, height), WHITE)
    canvas.paste(picture, (0, 0))
    canvas.paste(Image.fromarray(pixels), (width + GAP, 0))
    # Tags are placed on a small copy of the map (distance transforms of a 6000 px map are slow).
    step = max(1, max(label_map.shape) // 256)
    small = label_map[::step, ::step]
    _tags(ImageDraw.Draw(canvas), small, width + GAP, labels, colors, painted, typeface, (height, width))
    shares = counts / label_map.size
    legend = _legend([(colors[i], f"{labels[i]}  {100 * shares[i]:.1f}%") for i in present], canvas.width, typeface,
                     font_size)
    picture_out = Image.new("RGB", (canvas.width, canvas.height + legend.height), WHITE)
    picture_out.paste(canvas, (0, 0))
    picture_out.paste(legend, (0, canvas.height))
    return picture_out
