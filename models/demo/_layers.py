"""Numpy layers with hand-written backward passes for the demo CNN.

Activations are NHWC float32 so that im2col needs no transposes: a 3x3 convolution gathers the nine
shifted views of the padded input into a ``(N*OH*OW, 9*C)`` matrix and multiplies it by a
``(9*C, O)`` weight, whose row index is ``(3*i + j) * C + c`` for kernel tap ``(i, j)``. Every layer
caches what its backward pass needs in ``forward(train=True)``; ``backward`` takes dL/dy, stores
the parameter gradients in ``grads`` (same keys as ``params``) and returns dL/dx. ``DemoNet``
wires the layers into the demo network that ``train.py`` trains and exports.
"""

from __future__ import annotations

import numpy as np

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.1


class Layer:
    """Base class: a layer with optional parameters and their gradients."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """Returns the layer output; caches intermediates when ``train`` is set."""
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Returns dL/dx given dL/dy and fills ``self.grads``."""
        raise NotImplementedError


class Conv3x3(Layer):
    """3x3 convolution, padding 1, no bias (a BatchNormalization always follows).

    Forward ``y = cols(x) @ W``. Backward: ``dW = cols.T @ dy`` and ``dx = col2im(dy @ W.T)``,
    where col2im scatter-adds each of the nine taps back onto the padded input.
    """

    def __init__(self, rng: np.random.Generator, cin: int, cout: int, stride: int = 1, need_dx: bool = True) -> None:
        super().__init__()
        std = np.sqrt(2.0 / (9 * cin))  # He initialisation for a ReLU network
        self.params["w"] = (rng.standard_normal((9 * cin, cout)) * std).astype(np.float32)
        self.stride = stride
        self.need_dx = need_dx
        self._cols: np.ndarray | None = None
        self._in_shape: tuple[int, ...] = ()

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        return (h - 1) // self.stride + 1, (w - 1) // self.stride + 1

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        n, h, w, c = x.shape
        oh, ow = self._out_hw(h, w)
        s = self.stride
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        windows = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))[:, ::s, ::s]
        cols = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, 9 * c)  # copies once
        if train:
            self._cols, self._in_shape = cols, x.shape
        return (cols @ self.params["w"]).reshape(n, oh, ow, -1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        n, h, w, c = self._in_shape
        oh, ow = self._out_hw(h, w)
        s = self.stride
        dy2 = dy.reshape(-1, dy.shape[-1])
        self.grads["w"] = self._cols.T @ dy2
        self._cols = None
        if not self.need_dx:
            return np.empty(0, dtype=np.float32)
        # Tap-major (9, N, OH, OW, C) so that every scatter-add below reads a contiguous block.
        w_taps = self.params["w"].reshape(9, c, -1).transpose(0, 2, 1)
        dcols = np.matmul(dy2[None], w_taps).reshape(9, n, oh, ow, c)
        dxp = np.zeros((n, h + 2, w + 2, c), dtype=np.float32)
        for i in range(3):
            for j in range(3):
                dxp[:, i : i + s * oh : s, j : j + s * ow : s, :] += dcols[3 * i + j]
        return dxp[:, 1:-1, 1:-1, :]


class BatchNorm(Layer):
    """Per-channel batch normalisation over N, H and W.

    Training uses the batch statistics and updates running averages (momentum 0.1, biased
    variance) that inference uses. With ``xhat = (x - mean) / sqrt(var + eps)`` the backward pass is
    ``dgamma = sum(dy * xhat)``, ``dbeta = sum(dy)`` and
    ``dx = gamma / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat))``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.params["gamma"] = np.ones(channels, dtype=np.float32)
        self.params["beta"] = np.zeros(channels, dtype=np.float32)
        self.running_mean = np.zeros(channels, dtype=np.float32)
        self.running_var = np.ones(channels, dtype=np.float32)
        self._xhat: np.ndarray | None = None
        self._inv_std: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        if not train:
            inv_std = 1.0 / np.sqrt(self.running_var + BN_EPSILON)
            return (x - self.running_mean) * (inv_std * self.params["gamma"]) + self.params["beta"]
        x2 = x.reshape(-1, x.shape[-1])  # (N*H*W, C): reducing axis 0 of a 2-D array is fastest
        mean = x2.mean(axis=0)
        centered = x2 - mean
        var = np.einsum("mc,mc->c", centered, centered) / len(x2)
        self.running_mean += BN_MOMENTUM * (mean - self.running_mean)
        self.running_var += BN_MOMENTUM * (var - self.running_var)
        self._inv_std = 1.0 / np.sqrt(var + BN_EPSILON)
        self._xhat = centered * self._inv_std
        return (self._xhat * self.params["gamma"] + self.params["beta"]).reshape(x.shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy2 = dy.reshape(-1, dy.shape[-1])
        xhat = self._xhat
        self.grads["gamma"] = np.einsum("mc,mc->c", dy2, xhat)
        self.grads["beta"] = dy2.sum(axis=0)
        dx = dy2 - (self.grads["beta"] + xhat * self.grads["gamma"]) / len(dy2)
        self._xhat = None
        return (dx * (self._inv_std * self.params["gamma"])).reshape(dy.shape)


class ReLU(Layer):
    """``y = max(x, 0)``; backward passes dy where ``x > 0``."""

    def __init__(self) -> None:
        super().__init__()
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        mask = x > 0
        if train:
            self._mask = mask
        return x * mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self._mask


class MaxPool2(Layer):
    """2x2 max pooling, stride 2; backward routes dy to the arg-max of each window.

    Equal maxima all receive the gradient; the only realistic ties are zeros from the preceding
    ReLU, whose backward pass zeroes them again.
    """

    def __init__(self) -> None:
        super().__init__()
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        n, h, w, c = x.shape
        xr = x.reshape(n, h // 2, 2, w // 2, 2, c)
        y = xr.max(axis=(2, 4))
        if train:
            self._mask = xr == y[:, :, None, :, None, :]
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx = self._mask * dy[:, :, None, :, None, :]
        n, h2, _, w2, _, c = dx.shape
        return dx.reshape(n, 2 * h2, 2 * w2, c)


class GlobalAvgPool(Layer):
    """Mean over H and W; backward spreads ``dy / (H * W)`` evenly over the window."""

    def __init__(self) -> None:
        super().__init__()
        self._hw: tuple[int, int] = (1, 1)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self._hw = x.shape[1:3]
        return x.mean(axis=(1, 2))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        h, w = self._hw
        return np.broadcast_to(dy[:, None, None, :] / (h * w), (dy.shape[0], h, w, dy.shape[1]))


class Dense(Layer):
    """``y = x @ W.T + b`` with ``W`` shaped (out, in) as ONNX Gemm(transB=1) expects.

    Backward: ``dW = dy.T @ x``, ``db = sum(dy)``, ``dx = dy @ W``.
    """

    def __init__(self, rng: np.random.Generator, cin: int, cout: int) -> None:
        super().__init__()
        std = np.sqrt(1.0 / cin)
        self.params["w"] = (rng.standard_normal((cout, cin)) * std).astype(np.float32)
        self.params["b"] = np.zeros(cout, dtype=np.float32)
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        if train:
            self._x = x
        return x @ self.params["w"].T + self.params["b"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.grads["w"] = dy.T @ self._x
        self.grads["b"] = dy.sum(axis=0)
        return dy @ self.params["w"]


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy.

    Args:
        logits: ``(N, classes)`` float32 scores.
        labels: ``(N,)`` integer class indices.

    Returns:
        The mean loss and its gradient ``(softmax(logits) - onehot(labels)) / N``.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    prob = exp / exp.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    loss = float(-np.log(prob[rows, labels] + 1e-12).mean())
    prob[rows, labels] -= 1.0
    return loss, prob / len(labels)


def run_forward(layers: list[Layer], x: np.ndarray, train: bool) -> np.ndarray:
    """Returns ``x`` passed through ``layers`` in order."""
    for layer in layers:
        x = layer.forward(x, train)
    return x


def run_backward(layers: list[Layer], dy: np.ndarray) -> np.ndarray:
    """Returns dL/dx of ``layers`` given dL/dy, back-propagating in reverse order."""
    for layer in reversed(layers):
        dy = layer.backward(dy)
    return dy


class DemoNet:
    """The demo CNN; NHWC activations, stages named as the ONNX nodes they become."""

    def __init__(self, rng: np.random.Generator, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        c1, c2, c3 = widths
        self.stem = [Conv3x3(rng, 1, c1, need_dx=False), BatchNorm(c1), ReLU()]
        self.down = [Conv3x3(rng, c1, c2, stride=2), BatchNorm(c2), ReLU()]
        self.res_a = [Conv3x3(rng, c2, c2), BatchNorm(c2), ReLU()]
        self.res_b = [Conv3x3(rng, c2, c2), BatchNorm(c2)]
        self.res_relu = ReLU()
        self.pool = MaxPool2()
        self.head = [Conv3x3(rng, c2, c3), BatchNorm(c3), ReLU()]
        self.gap = GlobalAvgPool()
        self.fc = Dense(rng, c3, 10)

    def layers(self) -> list[Layer]:
        """Returns every layer, in forward order."""
        return [
            *self.stem,
            *self.down,
            *self.res_a,
            *self.res_b,
            self.res_relu,
            self.pool,
            *self.head,
            self.gap,
            self.fc,
        ]

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """Returns logits ``(N, 10)`` for NHWC input ``x``."""
        skip = run_forward(self.stem + self.down, x, train)
        h = self.res_relu.forward(skip + run_forward(self.res_a + self.res_b, skip, train), train)
        h = run_forward([self.pool, *self.head, self.gap, self.fc], h, train)
        return h

    def backward(self, dlogits: np.ndarray) -> None:
        """Back-propagates dL/dlogits; the residual Add sends its gradient down both branches."""
        d = run_backward([self.pool, *self.head, self.gap, self.fc], dlogits)
        d = self.res_relu.backward(d)
        d = d + run_backward(self.res_a + self.res_b, d)
        run_backward(self.stem + self.down, d)
