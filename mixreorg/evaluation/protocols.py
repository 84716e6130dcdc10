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

``sclip`` is the second lineage (SCLIP, then NACLIP, ClearCLIP, ProxyCLIP, Trident; peers.md "S"): a keep-ratio
resize to a short side of 336 (560 on Cityscapes), windows of 224 every 112, the 80 ImageNet templates, class-name
files with synonyms per class (each name is scored; a class takes its best name's probability after a softmax over
all names at the set's logit scale), and on the sets with background a probability threshold below which a pixel
is background (class 0, itself named by stuff words on VOC and COCO-Object). The per-dataset values are SCLIP's
released configs, kept in data_manifests/<set>.yaml under ``protocols: sclip:``; NACLIP's release differs on a few
(logit scale 40 everywhere, no area threshold, whole images on VOC, PAMR on), ClearCLIP's more (short side 448).

PAMR (``--pamr``) is an option of every protocol, off by default in all three as in their sources. ``groupvit`` and
``unified`` refine each window's class scores at a quarter of the window's size, as TCL does (10 steps, dilations
1-24), and ``unified``'s background score becomes TCL's 0.4; ``sclip`` refines the window-averaged scores at the
image's own size before the softmax, as SCLIP and NACLIP do (10 steps, dilations 8 and 16).

Every run-time override (``--size``, ``--crop``, ``--stride``, ``--templates``, ``--pamr``) goes through
``resolve_protocol`` too, so the record written beside the results is always what ran. The image normalisation
is the model's (``mean``/``std``: GroupViT's ImageNet values, or the CLIP model's own).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mixreorg.data.templates import FULL_TEMPLATES, SIMPLE_TEMPLATES, SUBSET_TEMPLATES
from mixreorg.errors import MixreorgError
from mixreorg.evaluation.pamr import PAMR_STEPS, SCLIP_DILATIONS, TCL_DILATIONS

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
MULTI_SCALE_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

# TCL's "custom" set: the 7 ImageNet "subset" templates plus two plural forms (kakaobrain/tcl datasets/templates.py).
TCL_EXTRA_TEMPLATES = ("a photo of many {}.", "a photo of {}s.")

# Per-dataset GroupViT thresholds are facts of the released configs (VOC .95, Context .35, COCO-Object .95,
# not the paper's .9/.5: NVlabs/GroupViT#56, #31); they live in data_manifests/<set>.yaml (protocol.bg_thresh).
GROUPVIT_DEFAULT_THRESHOLD = 0.5  # a set with a background class but no published threshold (synthetic)
# TCL's README: 0.5 without PAMR, 0.4 with it ("PAMR tends to reduce the foreground area").
UNIFIED_BACKGROUND_SCORE = 0.5
UNIFIED_PAMR_BACKGROUND_SCORE = 0.4
# SCLIP's defaults (clip_segmentor.py) where a set's config names none: logit scale 40; its three sets with
# background all use prob_thd 0.1.
SCLIP_LOGIT_SCALE = 40.0
SCLIP_PROBABILITY_THRESHOLD = 0.1

PROTOCOL_NAMES = ("groupvit", "unified", "sclip")
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
    # "window": the windows' scores are the labels' final scores (groupvit, unified). "softmax" (sclip): the windows
    # give each name's cosine similarity; after averaging, softmax(logit_scale x cosine) over all names, and a label
    # takes its best name's probability; "probability" background: label 0 where no label reaches background_score.
    readout: str = "window"
    synonyms: str = "mean"  # a label's names: "mean" embedding, or "max" probability (sclip)
    logit_scale: float | None = None
    area_threshold: float | None = None  # SCLIP on VOC21: labels winning under this share of the foreground are dropped
    class_names: str | None = None  # the manifest's class-name file the dataset's labels came from (sclip)
    pamr: bool = False
    pamr_steps: int = PAMR_STEPS
    pamr_dilations: tuple[int, ...] = ()
    pamr_stage: str = "none"  # "window" (TCL: per window, at a quarter of its size) or "image" (SCLIP: full size)

    def as_dict(self) -> dict:
        record = dataclasses.asdict(self)
        for key in ("templates", "scales", "pamr_dilations", "mean", "std"):
            record[key] = list(record[key])
        return record


def _templates(name: str) -> tuple[str, ...]:
    if name == "sclip":
        return tuple(FULL_TEMPLATES)
    return tuple(SIMPLE_TEMPLATES) if name == "groupvit" else tuple(SUBSET_TEMPLATES) + TCL_EXTRA_TEMPLATES


def image_geometry(dataset: str, model_image_size: int, protocol: str = "groupvit") -> tuple[int, int, int]:
    """(short side, long side, window) the protocols use on ``dataset`` for a model trained at ``model_image_size``.

    The published sets: 448 / 2048 / 448 whatever the model (sclip: 336 / 2048 / 224). The synthetic corpus: 2x / 8x /
    1x the training size (sclip: 1.5x / 8x / 1x, its published ratio). Your own pictures (IMAGES) get the geometry of
    the images the model was made for: the published one for a model trained at the published size or more, the
    synthetic corpus' one for the small presets trained below it (the only images they are trained on), so
    ``segment`` runs what ``eval`` runs for that model.
    """
    if dataset == IMAGES:
        dataset = "synthetic" if model_image_size < PUBLISHED_TRAINING_SIZE else "published"
    if dataset == "synthetic":
        short = 3 * model_image_size // 2 if protocol == "sclip" else 2 * model_image_size
        return short, 8 * model_image_size, model_image_size
    return (336, 2048, 224) if protocol == "sclip" else (448, 2048, 448)


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
    pamr: bool | None = None,
    settings: Mapping | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Protocol:
    """The protocol ``name`` as it applies to ``dataset`` (its resize, window and background rule).

    ``published_threshold`` is the dataset's GroupViT background threshold from its manifest (for IMAGES: the
    user's). ``settings`` is the dataset's block for this protocol in its manifest (``protocols: sclip:``).
    ``short_side`` (the long side follows in proportion), ``crop`` (the stride follows, half of it), ``stride``,
    ``templates``, ``background_score`` (the threshold or the constant) and ``pamr`` override the protocol's values;
    ``mean`` and ``std`` are the model's normalisation (pixel units; default GroupViT's ImageNet values).
    """
    if name not in PROTOCOL_NAMES:
        raise MixreorgError(f"unknown protocol '{name}'; choose one of: {', '.join(PROTOCOL_NAMES)}")
    for value, flag in ((short_side, "--size"), (crop, "--crop"), (stride, "--stride")):
        _positive(value, flag)
    settings = dict(settings or {}) if name == "sclip" else {}
    short, long_side, window = image_geometry(dataset, model_image_size, name)
    short = int(settings.get("resize_short_side", short))
    long_side = int(settings.get("resize_max_long_side", long_side))
    window = int(settings.get("slide_crop", window))
    if short_side is not None:
        long_side, short = max(short_side, round(long_side * short_side / short)), short_side
    step = stride or (int(settings["slide_stride"]) if crop is None and "slide_stride" in settings else None)
    window = crop or window
    step = step or window // 2
    if step > window:
        raise MixreorgError(f"--stride {step} is larger than the window ({window}): pixels between windows would "
                            "get no score; use a stride of at most the crop")
    pamr = bool(pamr)
    if not has_background:
        background, score = "none", None
    elif name == "groupvit":
        background = "threshold"
        score = GROUPVIT_DEFAULT_THRESHOLD if published_threshold is None else float(published_threshold)
    elif name == "unified":
        background, score = "constant", UNIFIED_PAMR_BACKGROUND_SCORE if pamr else UNIFIED_BACKGROUND_SCORE
    else:
        background, score = "probability", float(settings.get("prob_thd", SCLIP_PROBABILITY_THRESHOLD))
    if has_background and background_score is not None:
        score = float(background_score)
    sclip = name == "sclip"
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
        mean=tuple(float(v) for v in mean) if mean is not None else IMAGENET_MEAN,
        std=tuple(float(v) for v in std) if std is not None else IMAGENET_STD,
        readout="softmax" if sclip else "window",
        synonyms="max" if sclip else "mean",
        logit_scale=float(settings.get("logit_scale", SCLIP_LOGIT_SCALE)) if sclip else None,
        area_threshold=settings.get("area_thd") if sclip and has_background else None,
        class_names=settings.get("class_names") if sclip else None,
        pamr=pamr,
        pamr_dilations=(SCLIP_DILATIONS if sclip else TCL_DILATIONS) if pamr else (),
        pamr_stage=("image" if sclip else "window") if pamr else "none",
    )
