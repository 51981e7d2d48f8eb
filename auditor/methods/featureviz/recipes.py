"""Ready-made compositions: every knob in one Recipe, turned into objective, param, transforms.

The report section, the benchmark and the tests all go through here, so that a knob means the
same thing everywhere. Penalty weights are absolute here; the section scales them to the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from auditor.errors import ConfigError
from auditor.methods.featureviz import objectives
from auditor.methods.featureviz.param import make_param
from auditor.methods.featureviz.render import (
    DEFAULT_SNAPSHOTS,
    Form,
    Loop,
    Rendering,
    render_forms,
)
from auditor.methods.featureviz.transforms import compose, standard_transforms

INITS = ("zeros", "noise", "image")


@dataclass
class Recipe:
    """How to optimise: parameterisation, penalties, transforms, steps."""

    param: str = "fourier"
    valid: str = "sigmoid"  # pixels only: clip or sigmoid
    decay_power: float = 1.0
    decorrelate: bool = True
    steps: int = 512
    learning_rate: float = 0.05
    l2: float | np.ndarray = 0.0  # one weight, or one per image
    l2_center: float | np.ndarray = 0.0  # a value or an image (H, W, C), e.g. the data mean
    tv: float | np.ndarray = 0.0
    transforms: bool = True
    jitter: float | None = None  # None: sized to the input
    scale: float | None = None
    rotate: float | None = None
    blur_every: int = 0
    blur_sigma: float = 0.5
    snapshots: Sequence[int] = DEFAULT_SNAPSHOTS
    seed: int = 0

    def unregularised(self) -> Recipe:
        """Simonyan et al.'s plain gradient ascent on clipped pixels: no prior at all."""
        return dataclasses.replace(self, param="pixels", valid="clip", l2=0.0, tv=0.0,
                                   transforms=False, blur_every=0, learning_rate=0.01)

    def loop(self) -> Loop:
        """The render loop's own settings in the recipe."""
        return Loop(steps=self.steps, learning_rate=self.learning_rate,
                    snapshots=self.snapshots, blur_every=self.blur_every,
                    blur_sigma=self.blur_sigma, seed=self.seed)

    def penalised(self, objective: objectives.Objective) -> objectives.Objective:
        if np.any(self.l2):
            objective = objective - self.l2 * objectives.l2(self.l2_center)
        if np.any(self.tv):
            objective = objective - self.tv * objectives.total_variation()
        return objective


def start_values(param, inits: Sequence[str], real_image: np.ndarray | None,
                 seed: int = 0) -> np.ndarray:
    """Parameter values of each image's start: 'zeros' (all parameters zero, Simonyan et al.),
    'noise' (a uniform random image) or 'image' (``real_image``, a dataset image)."""
    unknown = sorted(set(inits) - set(INITS))
    if unknown:
        raise ConfigError(f"unknown init '{unknown[0]}'; use one of: {', '.join(INITS)}")
    values = np.zeros((len(inits), *param.value_shape), np.float32)
    if set(inits) == {"zeros"}:
        return values
    images = param.images(values).numpy()
    rng = np.random.default_rng(seed)
    for row, kind in enumerate(inits):
        if kind == "noise":
            images[row] = rng.uniform(0, 1, images.shape[1:])
        elif kind == "image":
            if real_image is None:
                raise ConfigError("init 'image' needs a dataset image to start from")
            images[row] = real_image
    return param.values_of(images).numpy()


def optimise(handle, objective: objectives.Objective, recipe: Recipe, count: int,
             inits: Sequence[str] | str = "zeros",
             real_image: np.ndarray | None = None) -> Rendering:
    """Optimise ``count`` images in one batch under ``recipe``; ``objective`` is unpenalised."""
    return render_forms(handle, recipe.penalised(objective),
                        [group(handle, recipe, count, inits, real_image)], recipe.loop())


def group(handle, recipe: Recipe, count: int, inits: Sequence[str] | str = "zeros",
          real_image: np.ndarray | None = None) -> tuple[Form, np.ndarray]:
    """``recipe``'s form of ``count`` images and their start: one group of a render
    (``render_forms``), which may optimise several groups, each of its own recipe, together."""
    param, start, transforms = prepare(handle, recipe, count, inits, real_image)
    return Form(param, compose(transforms), recipe.learning_rate, int(recipe.blur_every),
                float(recipe.blur_sigma)), start


def prepare(handle, recipe: Recipe, count: int, inits: Sequence[str] | str = "zeros",
            real_image: np.ndarray | None = None) -> tuple:
    """The parameterisation, each image's start and the transforms that ``recipe`` names."""
    param = make_param(recipe.param, tuple(handle.input_shape), valid=recipe.valid,
                       decay_power=recipe.decay_power, decorrelate=recipe.decorrelate)
    start = start_values(param, [inits] * count if isinstance(inits, str) else list(inits),
                         real_image, recipe.seed)
    transforms = standard_transforms(handle.input_shape[0], recipe.jitter, recipe.scale,
                                     recipe.rotate) if recipe.transforms else []
    return param, start, transforms


def visualise_classes(handle, classes: Sequence[int], recipe: Recipe, objective: str = "logit",
                      inits: Sequence[str] | str = "zeros",
                      real_image: np.ndarray | None = None) -> Rendering:
    """One image per entry of ``classes`` (repeat a class to compare inits), one batch."""
    return optimise(handle, objectives.class_objective(objective, classes), recipe,
                    len(classes), inits, real_image)
