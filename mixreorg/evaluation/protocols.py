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
Your own pictures (``dataset=IMAGES``: ``mixreorg segment`` and ``Predictor``) have no dataset either; they
get the geometry of the images the model was made for, derived from the checkpoint's training size by
``image_geometry`` below, so that ``segment`` runs what ``eval`` runs for that model.

Every run-time override (``--size``, ``--crop``, ``--stride``, ``--templates``) goes through
``resolve_protocol`` too, so the record written beside the results is always what ran.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
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
IMAGES = "images"  # the "dataset" of your own pictures (segment, Predictor)
PUBLISHED_TRAINING_SIZE = 224  # the training resolution the published protocols were set for


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


def image_geometry(dataset: str, model_image_size: int) -> tuple[int, int, int]:
    """(short side, long side, window) the protocols use on ``dataset`` for a model trained at ``model_image_size``.

    The published sets: 448 / 2048 / 448 whatever the model. The synthetic corpus: 2x / 8x / 1x the training size.
    Your own pictures (IMAGES) get the geometry of the images the model was made for: the published one for a
    model trained at the published size or more, the synthetic corpus' one for the small presets trained below
    it (the only images they are trained on), so ``segment`` runs what ``eval`` runs for that model.
    """
    if dataset == IMAGES:
        dataset = "synthetic" if model_image_size < PUBLISHED_TRAINING_SIZE else "published"
    if dataset == "synthetic":
        return 2 * model_image_size, 8 * model_image_size, model_image_size
    return 448, 2048, 448


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise MixreorgError(f"{flag} must be a positive number of pixels, got {value}")


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Prompt templates, each with one '{}' where the class name goes."""
    if not templates:
        raise MixreorgError("no prompt templates given; write one per line, each with {} for the class name")
    for template in templates:
        rest = template.replace("{}", "", 1)
        if template.count("{}") != 1 or "{" in rest or "}" in rest:
            raise MixreorgError(f"the prompt template '{template}' must hold exactly one {{}} (the class name goes "
                                "there), e.g. 'a photo of a {}.'")
    return tuple(templates)


def resolve_protocol(
    name: str,
    dataset: str,
    has_background: bool,
    model_image_size: int,
    multi_scale: bool = False,
    flip: bool = False,
    published_threshold: float | None = None,
    *,
    short_side: int | None = None,
    crop: int | None = None,
    stride: int | None = None,
    templates: Sequence[str] | None = None,
    background_score: float | None = None,
) -> Protocol:
    """The protocol ``name`` as it applies to ``dataset`` (its resize, window and background rule).

    ``published_threshold`` is the dataset's GroupViT background threshold from its manifest (for IMAGES: the
    user's). ``short_side`` (the long side follows in proportion), ``crop`` (the stride follows, half of it),
    ``stride``, ``templates`` and ``background_score`` (the threshold or the constant) override the protocol's values.
    """
    if name not in PROTOCOL_NAMES:
        raise MixreorgError(f"unknown protocol '{name}'; choose one of: {', '.join(PROTOCOL_NAMES)}")
    for value, flag in ((short_side, "--size"), (crop, "--crop"), (stride, "--stride")):
        _positive(value, flag)
    short, long_side, window = image_geometry(dataset, model_image_size)
    if short_side is not None:
        long_side, short = max(short_side, round(long_side * short_side / short)), short_side
    window = crop or window
    step = stride or window // 2
    if step > window:
        raise MixreorgError(f"--stride {step} is larger than the window ({window}): pixels between windows would "
                            "get no score; use a stride of at most the crop")
    if not has_background:
        background, score = "none", None
    elif name == "groupvit":
        background = "threshold"
        score = GROUPVIT_DEFAULT_THRESHOLD if published_threshold is None else float(published_threshold)
    else:
        background, score = "constant", UNIFIED_BACKGROUND_SCORE
    if has_background and background_score is not None:
        score = float(background_score)
    # mmseg's MultiScaleFlipAug applies each ratio to the (long, short) scale; flip doubles every scale.
    return Protocol(
        name=name,
        dataset=dataset,
        short_side=short,
        long_side=long_side,
        crop=window,
        stride=step,
        templates=_templates(name) if templates is None else check_templates(templates),
        background=background,
        background_score=score,
        scales=MULTI_SCALE_RATIOS if multi_scale else (1.0,),
        flip=flip,
    )
