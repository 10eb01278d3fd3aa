"""What clients train: a linear head or a two-layer head on L2-normalised tokens, as numpy.

Rows are normalised to unit L2 norm on each client (after the federation's standardisation; a
per-image operation, so encrypted rows always meet the public norm bound 1). The linear head is
trained by softmax regression (FedAvg strategies) or solved in closed form from sufficient
statistics (``he-ridge``); the two-layer head ``y = W2 (W1 x + b1)^2 + b2`` by SGD with momentum
(FedAvg strategies). Every model compiles its own encrypted plan (:meth:`compile_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "HEADS",
    "LinearHead",
    "MlpHead",
    "centralized_ridge",
    "initial_head",
    "normalize_rows",
    "ridge_statistics",
    "ridge_statistics_length",
    "solve_ridge",
    "train_softmax",
]


def normalize_rows(x) -> np.ndarray:
    """Rows scaled to unit L2 norm, never above it (all-zero rows stay zero): encrypted rows are
    checked against the inference key set's public bound ``max_norm = 1``."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True) * (1.0 + 1e-12)
    return x / np.maximum(norms, 1e-12)


class _Classifier:
    """Predictions and accuracy from ``logits`` (shared by the head models)."""

    def predict(self, x) -> np.ndarray:
        return self.logits(x).argmax(axis=1)

    def accuracy(self, x, y) -> float:
        return float(np.mean(self.predict(x) == np.asarray(y)))

    def head_features(self, x) -> np.ndarray:
        """The rows the head reads: the (already preprocessed) features themselves."""
        return np.asarray(x, dtype=np.float64)


@dataclass(frozen=True)
class LinearHead(_Classifier):
    """``logits = x @ weights.T + bias`` with weights (classes, dim)."""

    weights: np.ndarray
    bias: np.ndarray

    @classmethod
    def zeros(cls, classes: int, dim: int) -> LinearHead:
        return cls(np.zeros((classes, dim)), np.zeros(classes))

    @property
    def classes(self) -> int:
        return self.weights.shape[0]

    @property
    def dim(self) -> int:
        return self.weights.shape[1]

    @property
    def size(self) -> int:
        return self.weights.size + self.bias.size

    def to_vector(self) -> np.ndarray:
        return np.concatenate([self.weights.ravel(), self.bias])

    @classmethod
    def from_vector(cls, v, classes: int, dim: int) -> LinearHead:
        v = np.asarray(v, dtype=np.float64)
        if v.shape != (classes * dim + classes,):
            raise ValueError(
                f"a {classes}x{dim} head has {classes * dim + classes} parameters, got {v.shape}"
            )
        return cls(v[: classes * dim].reshape(classes, dim).copy(), v[classes * dim :].copy())

    def with_vector(self, v) -> LinearHead:
        """A head of the same shape with the parameters of ``v``."""
        return LinearHead.from_vector(v, self.classes, self.dim)

    def fit(
        self,
        x,
        y,
        *,
        epochs: int,
        learning_rate: float,
        batch_size: int,
        weight_decay: float,
        rng: np.random.Generator,
    ) -> LinearHead:
        """Local training from this head (softmax regression)."""
        return train_softmax(
            self,
            x,
            y,
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            weight_decay=weight_decay,
            rng=rng,
        )

    def logits(self, x) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.weights.T + self.bias

    #: name of the head model in configs and reports
    kind = "linear"

    def describe(self) -> str:
        return f"linear head ({self.size:,} parameters)"

    def compile_plan(self, context, *, layout: str):
        """The server's compiled plan of this head (:class:`hevit.he.LinearPlan`)."""
        from .. import he

        return he.LinearPlan.compile(context, self.weights, self.bias, layout=layout)


@dataclass(frozen=True)
class MlpHead(_Classifier):
    """``logits = W2 (W1 x + b1)^2 + b2``, the square taken element-wise: w1 (hidden, dim), b1
    (hidden,), w2 (classes, hidden), b2 (classes,). The square is the activation an encrypted
    evaluation can compute exactly (:class:`hevit.he.MlpPlan`)."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    kind = "mlp"

    @classmethod
    def initial(cls, classes: int, dim: int, hidden: int, *, seed: int) -> MlpHead:
        """The federation's common starting point (every hospital draws the same one from
        ``seed``): unit-norm random rows of W1 scaled by 2 (hidden pre-activations of order 1 on
        unit-norm inputs), small random W2, zero biases. A zero start would have zero gradients."""
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        rng = np.random.default_rng([seed, 0x6D6C70])
        w1 = rng.standard_normal((hidden, dim))
        w1 *= 2.0 / np.linalg.norm(w1, axis=1, keepdims=True)
        return cls(
            w1, np.zeros(hidden), 0.1 * rng.standard_normal((classes, hidden)), np.zeros(classes)
        )

    @property
    def classes(self) -> int:
        return self.w2.shape[0]

    @property
    def dim(self) -> int:
        return self.w1.shape[1]

    @property
    def hidden(self) -> int:
        return self.w1.shape[0]

    @property
    def size(self) -> int:
        return self.w1.size + self.b1.size + self.w2.size + self.b2.size

    def to_vector(self) -> np.ndarray:
        return np.concatenate([self.w1.ravel(), self.b1, self.w2.ravel(), self.b2])

    def with_vector(self, v) -> MlpHead:
        v = np.asarray(v, dtype=np.float64)
        if v.shape != (self.size,):
            raise ValueError(
                f"this head has {self.size} parameters, got a vector of shape {v.shape}"
            )
        h, d, c = self.hidden, self.dim, self.classes
        parts = np.split(v, np.cumsum([h * d, h, c * h]))
        return MlpHead(
            parts[0].reshape(h, d).copy(),
            parts[1].copy(),
            parts[2].reshape(c, h).copy(),
            parts[3].copy(),
        )

    def logits(self, x) -> np.ndarray:
        h = np.asarray(x, dtype=np.float64) @ self.w1.T + self.b1
        return (h * h) @ self.w2.T + self.b2

    def describe(self) -> str:
        return f"two-layer head, hidden {self.hidden}, square activation ({self.size:,} parameters)"

    def fit(
        self,
        x,
        y,
        *,
        epochs: int,
        learning_rate: float,
        batch_size: int,
        weight_decay: float,
        rng: np.random.Generator,
    ) -> MlpHead:
        """Mini-batch SGD with momentum 0.9 on the softmax cross-entropy from this head."""
        x = np.asarray(x, dtype=np.float64)
        onehot = np.eye(self.classes)[np.asarray(y)]
        params = [self.w1.copy(), self.b1.copy(), self.w2.copy(), self.b2.copy()]
        velocity = [np.zeros_like(p) for p in params]
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for start in range(0, len(x), batch_size):
                idx = order[start : start + batch_size]
                w1, b1, w2, b2 = params
                h = x[idx] @ w1.T + b1
                a = h * h
                z = a @ w2.T + b2
                z -= z.max(axis=1, keepdims=True)
                p = np.exp(z)
                p /= p.sum(axis=1, keepdims=True)
                g = (p - onehot[idx]) / len(idx)
                gh = (g @ w2) * 2.0 * h
                grads = (
                    gh.T @ x[idx] + weight_decay * w1,
                    gh.sum(axis=0),
                    g.T @ a + weight_decay * w2,
                    g.sum(axis=0),
                )
                for param, vel, grad in zip(params, velocity, grads, strict=True):
                    vel *= 0.9
                    vel += grad
                    param -= learning_rate * vel
        return MlpHead(*params)

    def compile_plan(self, context, *, layout: str):
        """The server's compiled plan of this head (:class:`hevit.he.MlpPlan`)."""
        from .. import he

        return he.MlpPlan.compile(context, self.w1, self.b1, self.w2, self.b2, layout=layout)


#: Head models clients can train (``he-ridge`` always solves a linear head).
HEADS = ("linear", "mlp")


def initial_head(kind: str, classes: int, dim: int, *, hidden: int = 64, seed: int = 0):
    """The global model before round 1: a zero linear head or the seeded two-layer start."""
    if kind == "linear":
        return LinearHead.zeros(classes, dim)
    if kind == "mlp":
        return MlpHead.initial(classes, dim, hidden, seed=seed)
    raise ValueError(f"head must be one of {HEADS}, got {kind!r}")


def train_softmax(
    head: LinearHead,
    x,
    y,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    weight_decay: float,
    rng: np.random.Generator,
) -> LinearHead:
    """Mini-batch SGD on the softmax cross-entropy from ``head``; returns the new head."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    w, b = head.weights.copy(), head.bias.copy()
    onehot = np.eye(head.classes)[y]
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            z = x[idx] @ w.T + b
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            g = (p - onehot[idx]) / len(idx)
            w -= learning_rate * (g.T @ x[idx] + weight_decay * w)
            b -= learning_rate * g.sum(axis=0)
    return LinearHead(w, b)


def ridge_statistics_length(dim: int, classes: int) -> int:
    """Entries of the statistics vector: upper triangle of the (dim+1)^2 Gram matrix + (dim+1) x classes."""
    d = dim + 1
    return d * (d + 1) // 2 + d * classes


def ridge_statistics(x, y, classes: int) -> np.ndarray:
    """Sufficient statistics of ridge regression onto one-hot targets, as one flat vector:
    the upper triangle of ``A = Xa^T Xa`` and ``B = Xa^T Y`` with ``Xa = [x, 1]`` (so ``B``'s last
    row is the class counts)."""
    x = np.asarray(x, dtype=np.float64)
    xa = np.hstack([x, np.ones((len(x), 1))])
    gram = xa.T @ xa
    cross = xa.T @ np.eye(classes)[np.asarray(y)]
    return np.concatenate([gram[np.triu_indices(xa.shape[1])], cross.ravel()])


def solve_ridge(stats, dim: int, classes: int, *, alpha: float) -> LinearHead:
    """The ridge head from (summed) statistics: ``(A + alpha I) W = B``; the bias column is
    penalised like the weights (as in :func:`centralized_ridge`)."""
    stats = np.asarray(stats, dtype=np.float64)
    d = dim + 1
    tri = d * (d + 1) // 2
    if stats.shape != (ridge_statistics_length(dim, classes),):
        raise ValueError(
            f"expected {ridge_statistics_length(dim, classes)} statistics, got {stats.shape}"
        )
    gram = np.zeros((d, d))
    gram[np.triu_indices(d)] = stats[:tri]
    gram = gram + np.triu(gram, 1).T
    cross = stats[tri:].reshape(d, classes)
    coef = np.linalg.solve(gram + alpha * np.eye(d), cross)
    return LinearHead(coef[:-1].T.copy(), coef[-1].copy())


def centralized_ridge(x, y, classes: int, *, alpha: float) -> LinearHead:
    """The same ridge head computed on pooled plaintext data: the reference for ``he-ridge``."""
    return solve_ridge(
        ridge_statistics(x, y, classes), np.asarray(x).shape[1], classes, alpha=alpha
    )
