"""Agreement with Zennit (Anders et al. 2021), the maintained PyTorch LRP library, on the same
weights: a small ReLU CNN ported from Keras to torch, three composites compared map for map.

torch and zennit are not in the ``dev`` extra, and the test is skipped in CI: the only
registry reachable here is PyPI, whose Linux torch wheel needs the CUDA libraries (cuDNN,
cuBLAS, NCCL: several GB of ``nvidia-*`` packages; without them ``import torch`` fails on
``libcudnn.so.9``), far over CI's budget, and Zennit's top-level ``__init__`` imports
torchvision, whose build must match torch's. Where a matching CPU build of torch and
torchvision can be installed, run it by hand:

    pip install -e ".[zennit]"     # or a CPU index's torch + torchvision, then zennit
    python -m pytest -n 0 tests/test_lrp_zennit.py
"""

from __future__ import annotations

import numpy as np
import pytest

try:
    import torch
except (ImportError, OSError) as exc:  # no torch, or a CUDA build without its libraries
    pytest.skip(f"torch cannot be imported here ({type(exc).__name__}: {exc}); see the "
                "module docstring", allow_module_level=True)
try:
    import zennit  # noqa: F401  (imports torchvision, whose binary must match torch's)
except (ImportError, RuntimeError) as exc:
    pytest.skip(f"zennit cannot be imported here ({type(exc).__name__}: {exc}); install "
                "matching torch and torchvision builds", allow_module_level=True)


def keras_and_torch_models():
    import keras

    keras.utils.set_random_seed(7)
    L = keras.layers
    inputs = keras.Input((10, 10, 3))
    h = L.Conv2D(4, 3, activation="relu")(inputs)
    h = L.MaxPooling2D(2)(L.Conv2D(6, 3, padding="same", activation="relu")(h))
    h = L.Dense(8, activation="relu")(L.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, L.Dense(3)(h))
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3, padding=1),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    dense = [layer for layer in model.layers if layer.weights]
    torch_layers = [m for m in net if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    with torch.no_grad():
        for keras_layer, torch_layer in zip(dense, torch_layers, strict=True):
            kernel, bias = (np.asarray(w) for w in keras_layer.get_weights())
            order = (3, 2, 0, 1) if kernel.ndim == 4 else (1, 0)
            torch_layer.weight.copy_(torch.from_numpy(kernel.transpose(order).copy()))
            torch_layer.bias.copy_(torch.from_numpy(bias))
    return model, net


def zennit_maps(net, x, targets, composite):
    from zennit.attribution import Gradient

    inputs = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    onehot = torch.eye(3)[torch.from_numpy(targets)]
    with Gradient(model=net, composite=composite) as attributor:  # Zennit starts from R = the
        _, relevance = attributor(inputs, lambda logits: logits * onehot)  # output it is given
    return relevance.detach().numpy().transpose(0, 2, 3, 1)


def composites(shape):
    from zennit.composites import EpsilonGammaBox, LayerMapComposite
    from zennit.rules import AlphaBeta, Epsilon, Norm, Pass
    from zennit.types import Activation, AvgPool, Convolution

    def everywhere(rule):
        return LayerMapComposite([(Activation, Pass()), (AvgPool, Norm()),
                                  (Convolution, rule), (torch.nn.Linear, rule)])

    box = EpsilonGammaBox(low=torch.zeros(1, *shape), high=torch.ones(1, *shape))
    absolute = {"stabiliser": "absolute"}  # Zennit's stabilisers are absolute (docs/lrp.md)
    return {"lrp": (absolute, box),
            "lrp_epsilon": ({"epsilon": 0.25, **absolute}, everywhere(Epsilon(0.25))),
            "lrp_alpha_beta": (absolute, everywhere(AlphaBeta(1.0, 0.0)))}


@pytest.mark.parametrize("method", ["lrp", "lrp_epsilon", "lrp_alpha_beta"])
def test_lrp_maps_equal_zennits_on_the_same_weights(tmp_path, method):
    from test_attribution import saved_handle

    from auditor.methods.attribution import attribute

    model, net = keras_and_torch_models()
    handle = saved_handle(model, tmp_path, "ported")
    x = np.random.default_rng(0).uniform(size=(4, 10, 10, 3)).astype(np.float32)
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(torch_logits, handle.logits(x).numpy(), atol=1e-5)
    targets = np.array([0, 1, 2, 0])
    options, composite = composites((3, 10, 10))[method]
    ours = attribute(handle, x, targets, method, **options)
    theirs = zennit_maps(net, x, targets, composite)
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * np.abs(theirs).max(), rtol=1e-3)
