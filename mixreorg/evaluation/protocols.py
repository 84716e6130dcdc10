"""Named evaluation protocols: every setting that changes the numbers, in one frozen record.

``groupvit`` reproduces NVlabs/GroupViT's mmseg 0.18 setup (spec 5.2), the protocol the GroupViT-family
papers (MixReorg included) report. ``unified`` is TCL's 8-benchmark setup (kakaobrain/tcl, peers.md
section 0 "T"): the same resize and sliding window for every set, and background as one fixed,
untuned score concatenated as class 0. Numbers are not comparable across protocols, so the resolved
record is written into every results file.

The ``synthetic`` set (our generated corpus, ~96 px images) has no published protocol. We resize it to
a short side of twice the model's training size and slide a window of the training size with half
overlap, so the model sees crops of the size it was trained on, as the real protocols do at 448 for a
224-trained GroupViT (crop = 2x training size there; here the images are too small for that).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mixreorg.data.templates import SIMPLE_TEMPLATES, SUBSET_TEMPLATES
from mixreorg.errors import MixreorgError

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
MULTI_SCALE_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

# TCL's "custom" set: the 7 ImageNet "subset" templates plus two plural forms (kakaobrain/tcl datasets/templates.py).
TCL_EXTRA_TEMPLATES = ("a photo of many {}.", "a photo of {}s.")

# Per-dataset GroupViT thresholds are facts of the released configs (VOC .95, Context .35, COCO-Object .95,
# not the paper's .9/.5: NVlabs/GroupViT#56, #31); they live in data_manifests/<set>.yaml (protocol.bg_thresh).
GROUPVIT_DEFAULT_THRESHOLD = 0.5  # a set with a background class but no published threshold (synthetic)
# TCL without PAMR (its README: 0.4 with PAMR, 0.5 without); we do not apply PAMR.
UNIFIED_BACKGROUND_SCORE = 0.5

PROTOCOL_NAMES = ("groupvit", "unified")


@dataclass(frozen=True)
class Protocol:
    name: str
    dataset: str
    short_side: int  # keep-ratio resize: scale = min(short_side / short edge, long_side / long edge)
    long_side: int
    crop: int  # sliding window size; an image smaller than the window along an axis is run whole
    stride: int
    templates: tuple[str, ...]
    # "threshold": GroupViT's rule (background where the best class < min(score, best segment score));
    # "constant": TCL's rule (a channel holding the score is concatenated as class 0); "none": no background.
    background: str
    background_score: float | None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    dense_mode: str = "groupvit"  # spec 5.2 steps 1-6 (hard winner segment, top-k filtered class softmax)
    top_k: int = 5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # image resize (mmcv/cv2 bilinear, no antialias) and logit resize

    def as_dict(self) -> dict:
        record = dataclasses.asdict(self)
        record["templates"] = list(self.templates)
        record["scales"] = list(self.scales)
        return record


def _templates(name: str) -> tuple[str, ...]:
    return tuple(SIMPLE_TEMPLATES) if name == "groupvit" else tuple(SUBSET_TEMPLATES) + TCL_EXTRA_TEMPLATES


def resolve_protocol(
    name: str,
    dataset: str,
    has_background: bool,
    model_image_size: int,
    multi_scale: bool = False,
    flip: bool = False,
    published_threshold: float | None = None,
) -> Protocol:
    """The protocol ``name`` as it applies to ``dataset`` (its resize, window and background rule).

    ``published_threshold`` is the dataset's GroupViT background threshold from its manifest.
    """
    if name not in PROTOCOL_NAMES:
        raise MixreorgError(f"unknown protocol '{name}'; choose one of: {', '.join(PROTOCOL_NAMES)}")
    if dataset == "synthetic":
        short, long_side, crop = 2 * model_image_size, 8 * model_image_size, model_image_size
    else:
        short, long_side, crop = 448, 2048, 448
    if not has_background:
        background, score = "none", None
    elif name == "groupvit":
        background = "threshold"
        score = GROUPVIT_DEFAULT_THRESHOLD if published_threshold is None else float(published_threshold)
    else:
        background, score = "constant", UNIFIED_BACKGROUND_SCORE
    # mmseg's MultiScaleFlipAug applies each ratio to the (long, short) scale; flip doubles every scale.
    return Protocol(
        name=name,
        dataset=dataset,
        short_side=short,
        long_side=long_side,
        crop=crop,
        stride=crop // 2,
        templates=_templates(name),
        background=background,
        background_score=score,
        scales=MULTI_SCALE_RATIOS if multi_scale else (1.0,),
        flip=flip,
    )
