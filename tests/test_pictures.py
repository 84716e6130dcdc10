"""Pictures and mask colours: readable size, image | overlay, outlines, name tags, colours stable per label name,
benchmark palettes."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from mixreorg.data.benchmarks.manifest import benchmark_spec
from mixreorg.inference.colors import BACKGROUND_COLOR, label_colors, name_color
from mixreorg.inference.render import GAP, MAX_SIDE, MIN_SIDE, outline, panel_size, render_overlay, tag_positions


def blocks(height: int, width: int) -> np.ndarray:
    """Label map: 0 everywhere, a block of 1 on the left, a block of 2 on the right."""
    label_map = np.zeros((height, width), dtype=np.uint8)
    label_map[height // 4 : 3 * height // 4, width // 8 : width // 2] = 1
    label_map[height // 3 :, 5 * width // 8 :] = 2
    return label_map


def test_colours_follow_the_name_not_the_order_or_the_company():
    first = label_colors(["zorbing", "kite surfing", "llama"])
    second = label_colors(["llama", "zorbing", "kite surfing"])
    assert (first[0] == second[1]).all() and (first[2] == second[0]).all()
    assert (label_colors(["zorbing", "unicycle"])[0] == first[0]).all()  # another label set, same colour
    assert tuple(label_colors(["zorbing"])[0]) == name_color("Zorbing")  # case does not matter
    many = label_colors([f"thing {i}" for i in range(12)]).astype(float)
    distances = np.linalg.norm(many[:, None] - many[None], axis=-1) + 1e9 * np.eye(12)
    assert distances.min() >= 60  # no two labels of one picture look alike
    with_bg = label_colors(["background", "zorbing"], background_first=True)
    assert tuple(with_bg[0]) == BACKGROUND_COLOR and (with_bg[1] == first[0]).all()


def test_benchmark_labels_take_the_benchmarks_palette():
    voc = benchmark_spec("voc", "voc")
    assert [tuple(c) for c in label_colors(["cat", "dog", "person"])] == [
        tuple(voc.palette[voc.classes.index(name)]) for name in ("cat", "dog", "person")]
    city = benchmark_spec("cityscapes", "cityscapes")
    rider = city.palette[city.classes.index("rider")]
    assert tuple(label_colors(["road", "rider", "traffic light"])[1]) == tuple(rider)
    ade = benchmark_spec("ade20k", "ade20k")
    assert tuple(label_colors(["wall", "skyscraper"])[1]) == tuple(ade.palette[ade.classes.index("skyscraper")])
    with_bg = label_colors(["background", "cat"], background_first=True)
    assert tuple(with_bg[1]) == tuple(voc.palette[voc.classes.index("cat")])
    assert tuple(label_colors(["cat", "my new label"])[0]) == name_color("cat")  # not all in one benchmark


def test_panels_are_readable_and_bounded():
    assert min(panel_size(48, 64)) == MIN_SIDE
    assert panel_size(3000, 4000) == (1200, MAX_SIDE)
    assert max(panel_size(20, 2000)) == MAX_SIDE  # a strip: the long side bound wins


def test_picture_is_image_beside_overlay_with_outlines_tags_and_legend():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    label_map = blocks(48, 64)
    labels = ["grass", "zorbing", "kite"]
    colors = label_colors(labels)
    picture = np.asarray(render_overlay(image, label_map, labels, colors))
    height, width = panel_size(48, 64)
    assert picture.shape[1] == 2 * width + GAP and picture.shape[0] > height  # legend below
    left = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
    assert np.array_equal(picture[:height, :width], left)  # the image itself, untouched
    right = picture[:height, width + GAP :].astype(int)
    big = np.asarray(Image.fromarray(label_map).resize((width, height), Image.Resampling.NEAREST))
    edges = outline(torch.from_numpy(big.astype(np.int64)), 2).numpy()
    for index in (1, 2):  # outline pixels carry the full label colour (what the legend swatch shows)
        ring = edges & (big == index)
        share = (np.abs(right[ring] - colors[index]).sum(axis=1) == 0).mean()
        assert share > 0.9, (index, share)
    inside = (big == 1) & ~edges
    tinted = right[inside].mean(axis=0)
    assert np.abs(tinted - colors[1]).sum() < np.abs(left[inside].mean(axis=0) - colors[1]).sum()
    legend = picture[height:]
    for index in range(3):  # a swatch of each present label's exact colour
        assert (np.abs(legend.astype(int) - colors[index]).sum(axis=2) == 0).sum() > 50


def test_tags_sit_inside_the_largest_regions():
    label_map = blocks(120, 160)
    for index in (1, 2):
        (row, col), = tag_positions(label_map, index)
        assert label_map[row, col] == index
    speck = np.zeros((100, 100), dtype=np.uint8)
    speck[0, 0] = 1
    assert tag_positions(speck, 1) == []  # too small to carry a tag


def test_background_keeps_the_image():
    image = np.full((60, 80, 3), 200, dtype=np.uint8)
    label_map = blocks(60, 80)
    labels = ["background", "cat", "zorbing"]
    picture = np.asarray(render_overlay(image, label_map, labels, label_colors(labels, True), background_first=True))
    height, width = panel_size(60, 80)
    right = picture[:height, width + GAP :]
    assert (right[:10, :10] == 200).all()  # a background corner is the image's own grey
