"""Optimisation-based attacks: gradient matching (inverting gradients) and [CLS] inversion.

Both optimise an image with Adam under a total-variation prior and record their objective per
iteration, so callers can check that the attack actually makes progress.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._optional import require

__all__ = ["AttackTrace", "feature_inversion", "inverting_gradients", "total_variation"]


@dataclass
class AttackTrace:
    image: np.ndarray  # (B, 3, H, W) normalised
    objective: list[float] = field(default_factory=list)


def total_variation(x):
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    return dx + dy


class _UnfusedAttention:
    """Gradient matching differentiates twice; PyTorch's fused CPU attention has no double
    backward, so timm attention layers use their explicit softmax(QK^T)V path meanwhile."""

    def __init__(self, model) -> None:
        self.layers = [m for m in model.modules() if hasattr(m, "fused_attn")]

    def __enter__(self):
        self.saved = [m.fused_attn for m in self.layers]
        for m in self.layers:
            m.fused_attn = False
        return self

    def __exit__(self, *exc):
        for m, v in zip(self.layers, self.saved, strict=True):
            m.fused_attn = v
        return False


def _start(shape, seed):
    torch = require("torch", "vit")

    g = torch.Generator().manual_seed(seed)
    return (0.5 * torch.randn(shape, generator=g)).requires_grad_(True)


def _optimise(
    objective, shape, *, iterations: int, lr: float, seed: int, on_iteration=None
) -> AttackTrace:
    """Adam on an image batch from a seeded random start, clamped to the normalised range; the
    one loop both attacks share. ``on_iteration()`` is called after every step (progress)."""
    torch = require("torch", "vit")

    x = _start(shape, seed)
    opt = torch.optim.Adam([x], lr=lr)
    trace = AttackTrace(image=np.empty(0))
    for _ in range(iterations):
        opt.zero_grad()
        value = objective(x)
        value.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(-3, 3)
        trace.objective.append(float(value.detach()))
        if on_iteration is not None:
            on_iteration()
    trace.image = x.detach().numpy()
    return trace


def inverting_gradients(
    model,
    observed: dict[str, np.ndarray],
    labels,
    *,
    image_shape,
    iterations: int = 50,
    lr: float = 0.1,
    tv_weight: float = 1e-2,
    seed: int = 0,
    parameter_names=None,
    on_iteration=None,
) -> AttackTrace:
    """Geiping et al. (2020): minimise 1 - cos(grad(x_hat), observed) + tv * TV(x_hat).

    Parameters
    ----------
    model : torch module mapping images to logits (the shared model the victim trained; for
        hevit's ViT tail, the frozen front followed by the tail)
    observed : parameter name (as in ``model.named_parameters()``) -> observed gradient, or the
        negated update of a few local steps (the direction matters, not the scale)
    labels : the batch's labels (recoverable from the head's bias gradient for one image)
    image_shape : (B, 3, H, W)
    parameter_names : gradients to match (default: every observed parameter)
    on_iteration : called after every optimisation step (e.g. a progress bar's update)
    """
    torch = require("torch", "vit")

    names = list(parameter_names or observed)
    params = dict(model.named_parameters())
    targets = [torch.from_numpy(np.asarray(observed[n], dtype=np.float32)) for n in names]
    target_norm = torch.sqrt(sum((t * t).sum() for t in targets))
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)

    def objective(x):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True)
        dot = sum((g * t).sum() for g, t in zip(grads, targets, strict=True))
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        return 1 - dot / (norm * target_norm + 1e-12) + tv_weight * total_variation(x)

    with _UnfusedAttention(model):
        return _optimise(
            objective,
            image_shape,
            iterations=iterations,
            lr=lr,
            seed=seed,
            on_iteration=on_iteration,
        )


def feature_inversion(
    model,
    target_cls: np.ndarray,
    *,
    image_shape,
    iterations: int = 50,
    lr: float = 0.1,
    tv_weight: float = 1e-2,
    seed: int = 0,
    on_iteration=None,
) -> AttackTrace:
    """Finds images whose [CLS] tokens point the way of ``target_cls`` (B, D): minimise
    1 - cos(cls(x), target) + tv * TV(x). The cosine makes the attack scale-free, so a token
    recovered only up to scale (from a head update) is as good as the leaked token itself."""
    torch = require("torch", "vit")

    target = torch.from_numpy(np.asarray(target_cls, dtype=np.float32))

    def objective(x):
        cls = model.forward_head(model.forward_features(x), pre_logits=True)
        cos = torch.nn.functional.cosine_similarity(cls, target, dim=1)
        return (1 - cos).mean() + tv_weight * total_variation(x)

    return _optimise(
        objective, image_shape, iterations=iterations, lr=lr, seed=seed, on_iteration=on_iteration
    )
