"""The one optimisation loop: objective, parameterisation and transforms composed (after Lucid).

All images of a request are optimised together in one batch: every image carries its own target
inside the objective, so ten classes cost one forward and backward pass per step, not ten.
Steps run inside a compiled ``tf.function`` loop, in chunks between the requested snapshots.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from auditor.inputs.layers import activations_and_logits
from auditor.methods.featureviz.transforms import compose, gaussian_blur

DEFAULT_SNAPSHOTS = (0, 16, 64, 256, 1024)


@dataclass
class Rendering:
    """Optimised images in display space, with snapshots of how they got there."""

    images: np.ndarray  # (N, H, W, C) in [0, 1]
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)  # step -> images, last too
    steps: int = 0
    seconds: float = 0.0
    chunks: list[tuple[int, float]] = field(default_factory=list)  # (steps, seconds) per call;
    # the first call also traces the step function

    def seconds_per_step(self) -> float:
        """Steady-state time per step: the chunks after the first (which pays the tracing)."""
        later = self.chunks[1:] or self.chunks
        return sum(s for _, s in later) / max(sum(n for n, _ in later), 1)


def render(handle, objective, param, transforms: Sequence = (), *, steps: int = 256,
           learning_rate: float = 0.05, snapshots: Sequence[int] = DEFAULT_SNAPSHOTS,
           blur_every: int = 0, blur_sigma: float = 0.5, seed: int = 0) -> Rendering:
    """Maximise ``objective`` over the images of ``param`` with Adam for ``steps`` steps.

    ``blur_every`` > 0 blurs the images themselves every that many steps (Yosinski et al.
    2015), which slowly erases detail that no step keeps renewing.
    """
    import keras
    import tensorflow as tf

    started = time.perf_counter()
    tapped = activations_and_logits(handle, objective.layers)

    def features(images):
        activations, logits = tapped(images)
        return {"logits": logits, **dict(zip(objective.layers, activations, strict=True))}

    transform = compose(transforms)
    rng = tf.random.Generator.from_seed(seed)
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(param.variables)

    def step(index):
        with tf.GradientTape() as tape:
            image = param()
            state = features(transform(image, rng))
            state["image"] = image
            loss = -tf.reduce_sum(objective(state))
        optimizer.apply_gradients(zip(tape.gradient(loss, param.variables), param.variables,
                                      strict=True))
        param.project()
        if blur_every > 0 and (index + 1) % blur_every == 0:
            param.set_images(gaussian_blur(param(), blur_sigma))

    @tf.function
    def run(first, count):
        for index in tf.range(first, first + count):
            step(index)

    stops = sorted({s for s in snapshots if 0 <= s <= steps} | {steps})
    kept, done, chunks = {}, 0, []
    for stop in stops:
        if stop > done:
            tick = time.perf_counter()
            run(tf.constant(done), tf.constant(stop - done))
            chunks.append((stop - done, time.perf_counter() - tick))
            done = stop
        if stop in snapshots or stop == steps:
            kept[stop] = param().numpy()
    return Rendering(images=param().numpy(), snapshots=kept, steps=steps,
                     seconds=time.perf_counter() - started, chunks=chunks)
