"""The noise tunnel wraps any registered method (as Captum's NoiseTunnel): its three modes over
the gradient are SmoothGrad, SquareGrad and VarGrad, and over any other method they summarise that
method's maps of the same noisy copies."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.errors import AuditorError
from auditor.methods.attribution import METHODS, attribute
from auditor.methods.attribution.registry import attribution_rows, describe_methods


def by_hand(handle, x, y, method, tunnel: tuple, **options):
    """Each noisy copy explained on its own by ``method``: (mean, mean square, variance);
    ``tunnel`` is (samples, noise, seed)."""
    samples, noise, seed = tunnel
    draws = np.random.default_rng(seed).standard_normal((samples, *x.shape[1:]), np.float32)
    sigma = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    maps = np.stack([attribute(handle, x + sigma.reshape(-1, 1, 1, 1) * draw, y, method,
                               **options) for draw in draws])
    return maps.mean(axis=0), (maps ** 2).mean(axis=0), maps.var(axis=0)


def test_smoothgrad_squaregrad_and_vargrad_are_the_tunnel_over_the_gradient(digits_handle,
                                                                          digits_test):
    x, y = digits_test[0][:4], digits_test[1][:4]
    mean, square, variance = by_hand(digits_handle, x, y, "gradient", (5, 0.2, 3))
    for name, expected in (("smoothgrad", mean), ("squaregrad", square), ("vargrad", variance)):
        maps = attribute(digits_handle, x, y, name, samples=5, noise=0.2, seed=3)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(maps, expected, atol=1e-5 * scale, rtol=1e-4)
        np.testing.assert_array_equal(
            attribute(digits_handle, x, y, f"{name}:gradient", samples=5, noise=0.2, seed=3), maps)


def test_over_another_method_the_tunnel_summarises_that_methods_maps_of_noisy_copies(
        digits_handle, digits_test):
    x, y = digits_test[0][4:7], digits_test[1][4:7]
    mean, _, _ = by_hand(digits_handle, x, y, "integrated_gradients", (3, 0.1, 0), steps=4)
    maps = attribute(digits_handle, x, y, "smoothgrad:integrated_gradients", samples=3,
                     noise=0.1, steps=4)
    np.testing.assert_allclose(maps, mean, atol=1e-5 * np.abs(mean).max(), rtol=1e-4)
    _, square, _ = by_hand(digits_handle, x, y, "rise", (3, 0.1, 1), masks=20, cells=4, seed=5)
    maps = attribute(digits_handle, x, y, "squaregrad:rise", samples=3, noise=0.1, seed=1,
                     masks=20, cells=4, base_seed=5)  # rise's own seed, renamed
    np.testing.assert_allclose(maps, square, atol=1e-5 * square.max(), rtol=1e-4)


@pytest.mark.parametrize("name, options", [
    ("smoothgrad:integrated_gradients", {"steps": 4, "samples": 3}),
    ("squaregrad:occlusion", {"patch": 8, "stride": 8, "samples": 2}),
])
def test_a_wrapped_method_batched_equals_one_image_at_a_time(digits_handle, digits_test, name,
                                                             options):
    x, y = digits_test[0][:5], digits_test[1][:5]
    if name.endswith("integrated_gradients"):  # a per-sample option travels with its copies
        options = {**options, "baseline": np.random.default_rng(0).uniform(
            0, 0.2, x.shape).astype(np.float32)}
    maps = attribute(digits_handle, x, y, name, memory_budget=10**7, **options)
    for i in (0, 3):
        alone = {k: (v[i:i + 1] if isinstance(v, np.ndarray) else v) for k, v in options.items()}
        single = attribute(digits_handle, x[i:i + 1], y[i:i + 1], name, **alone)
        np.testing.assert_allclose(single[0], maps[i], atol=1e-5 * np.abs(maps).max(), rtol=1e-4)


def test_a_wrapped_methods_facts_and_cost_come_from_the_method_it_wraps():
    assert METHODS["smoothgrad:integrated_gradients"].linear
    assert METHODS["smoothgrad:gradcam"].needs_layer
    assert METHODS["smoothgrad:gradcam_pp"].needs_rectified  # its layer is the base's
    assert not METHODS["smoothgrad:saliency"].signed
    assert not METHODS["vargrad:gradient_x_input"].signed
    assert METHODS["squaregrad:occlusion"].forward_only
    assert "smoothgrad:vargrad" in METHODS and "smoothgrad:nothing" not in METHODS
    assert "smoothgrad:gradient" not in list(METHODS)  # resolved, never listed
    shape = (32, 32, 1)
    rows = attribution_rows(["smoothgrad:integrated_gradients"], 10, shape,
                            {"smoothgrad:integrated_gradients": {"samples": 4, "steps": 8}})
    assert rows == (0, 10 * 4 * 8)
    occlusion = attribution_rows(["occlusion"], 10, shape)[0]
    assert attribution_rows(["vargrad:occlusion"], 10, shape) == (16 * occlusion, 0)
    with pytest.raises(AuditorError, match="no option 'seed_'"):
        attribute(None, np.zeros((1, 32, 32, 1)), [0], "vargrad:rise", seed_=1)
    assert "WRAPPER:METHOD" in describe_methods()


def test_a_spec_may_name_a_wrapped_method_with_its_options():
    from auditor.configure import make_config
    from auditor.errors import ConfigError

    table = {"methods": ["smoothgrad:integrated_gradients"],
             "method_options": {"smoothgrad:integrated_gradients": {"steps": 4, "samples": 2}}}
    make_config({"model": "/nowhere/model.keras", "attribution": table})
    table["method_options"]["smoothgrad:integrated_gradients"]["blur"] = 1
    with pytest.raises(ConfigError, match="no option 'blur'"):
        make_config({"model": "/nowhere/model.keras", "attribution": table})
