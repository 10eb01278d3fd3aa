"""Optional local fine-tuning of the ViT on a client's own images before extraction.

As in the paper, each client may adapt its ViT locally; only [CLS] tokens (encrypted) ever leave.
A plain PyTorch loop: a temporary linear head on the [CLS] token, cross-entropy, AdamW, a few
epochs. Off by default: on a 2-core CPU one epoch over 600 ViT-B/16 images takes minutes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .._optional import require

__all__ = ["FinetuneResult", "finetune_vit"]

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    epochs: int
    images: int
    loss_per_epoch: list[float] = field(default_factory=list)
    accuracy_per_epoch: list[float] = field(default_factory=list)


def finetune_vit(
    model,
    folder,
    indices,
    preprocess,
    *,
    epochs: int = 1,
    lr: float = 1e-4,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tunes ``model`` in place on ``folder`` images ``indices`` and returns the loss curve.

    ``preprocess`` is the model's :class:`PreprocessConfig`. The temporary classification head is
    discarded afterwards; the model is left in eval mode.
    """
    torch = require("torch", "vit")
    tqdm = require("tqdm.auto", "vit").tqdm

    from .preprocess import preprocess_images
    from .vit import ClsTokenModel, cls_dim

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    indices = np.asarray(indices)
    labels = folder.labels
    classes = len(folder.classes)
    # seeded head initialisation and any dropout draw from a forked RNG: the caller's global
    # torch RNG state is left as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        features = ClsTokenModel(model)
        head = torch.nn.Linear(cls_dim(model), classes)
        optimizer = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=lr)
        result = FinetuneResult(epochs=epochs, images=len(indices))
        model.train()
        try:
            for epoch in range(epochs):
                order = rng.permutation(indices)
                total, correct, loss_sum = 0, 0, 0.0
                bar = tqdm(
                    total=len(order),
                    desc=f"fine-tune epoch {epoch + 1}/{epochs}",
                    disable=not progress,
                )
                for lo in range(0, len(order), batch_size):
                    chunk = order[lo : lo + batch_size]
                    x = torch.from_numpy(
                        preprocess_images([folder.load(int(i)) for i in chunk], preprocess)
                    )
                    y = torch.from_numpy(labels[chunk])
                    logits = head(features(x))
                    loss = torch.nn.functional.cross_entropy(logits, y)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.item() * len(chunk)
                    correct += int((logits.argmax(1) == y).sum())
                    total += len(chunk)
                    bar.update(len(chunk))
                bar.close()
                result.loss_per_epoch.append(loss_sum / total)
                result.accuracy_per_epoch.append(correct / total)
                log.info(
                    "fine-tune epoch %d: loss %.4f, train accuracy %.4f",
                    epoch + 1,
                    loss_sum / total,
                    correct / total,
                )
        finally:
            model.eval()
        return result
