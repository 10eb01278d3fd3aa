"""The trainable ViT tail: the last k transformer blocks, the final norm and a linear head.

``FederatedConfig`` trains the linear head by default; with ``trainable_blocks=k`` the FedAvg
strategies train the last k blocks too (the usual "gradient encryption" setting, millions of
parameters per round). Hospitals run the frozen front of the ViT once over their images and keep
the token sequences entering block ``L - k`` (:func:`prefix_tokens`); training and inference then
only run the tail. The head reads the L2-normalised [CLS] token, so the rows a hospital encrypts
for ``he-cls`` meet the public norm bound 1 and the server's plan is exactly the head.

Every parameter travels as one float64 vector (:meth:`ViTTail.to_vector`), so the aggregation
code is the same as for the head alone.
"""

from __future__ import annotations

import copy

import numpy as np

from ..errors import ModelError

__all__ = ["ViTTail", "prefix_tokens"]


def _torch():
    import torch

    return torch


def _check_vit(model, blocks: int) -> None:
    if not hasattr(model, "blocks") or not hasattr(model, "patch_embed"):
        raise ModelError(f"{type(model).__name__} is not a timm VisionTransformer")
    if not 1 <= blocks <= len(model.blocks):
        raise ModelError(
            f"trainable_blocks must be between 1 and {len(model.blocks)}, got {blocks}"
        )
    if getattr(model, "global_pool", "token") != "token":
        raise ModelError("the tail reads the [CLS] token; build the ViT with global_pool='token'")


def prefix_tokens(model, images: np.ndarray, blocks: int, *, batch_size: int = 16) -> np.ndarray:
    """Runs the frozen front of ``model`` (patch embedding, position embedding and all but the
    last ``blocks`` blocks) on preprocessed ``images`` (N, 3, H, W); returns (N, tokens, dim)
    float32."""
    torch = _torch()
    _check_vit(model, blocks)
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(
                np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
            )
            x = model.patch_embed(x)
            x = model._pos_embed(x)
            x = model.patch_drop(x)
            x = model.norm_pre(x)
            for blk in model.blocks[: len(model.blocks) - blocks]:
                x = blk(x)
            out.append(x.numpy())
    return np.concatenate(out).astype(np.float32)


class ViTTail:
    """The last blocks, final norm and a linear head on the normalised [CLS] token.

    Same interface as :class:`~hevit.federated.LinearHead` (``size``, ``to_vector``,
    ``with_vector``, ``logits``, ``predict``, ``accuracy``, ``fit``, ``weights``, ``bias``), plus
    :meth:`head_features`, the rows ``he-cls`` encrypts. Inputs are token sequences from
    :func:`prefix_tokens`.
    """

    def __init__(self, module, base=None) -> None:
        self.module = module
        #: the full ViT the tail was cut from (its frozen front stays as it was)
        self.base = base

    @classmethod
    def from_vit(cls, model, blocks: int, classes: int) -> ViTTail:
        """The tail of ``model`` with its current block weights and a zero head."""
        torch = _torch()
        _check_vit(model, blocks)

        class Tail(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.blocks = torch.nn.Sequential(
                    *[copy.deepcopy(b) for b in model.blocks[-blocks:]]
                )
                self.norm = copy.deepcopy(model.norm)
                self.head = torch.nn.Linear(model.num_features, classes, dtype=torch.float64)
                torch.nn.init.zeros_(self.head.weight)
                torch.nn.init.zeros_(self.head.bias)

            def features(self, tokens):
                x = self.norm(self.blocks(tokens))[:, 0]
                return torch.nn.functional.normalize(x, dim=1) * (1.0 - 1e-6)

            def forward(self, tokens):
                return self.head(self.features(tokens).double())

        return cls(Tail(), model)

    # ------------------------------------------------------------------ parameters
    @property
    def classes(self) -> int:
        return self.module.head.out_features

    @property
    def dim(self) -> int:
        return self.module.head.in_features

    @property
    def size(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def to_vector(self) -> np.ndarray:
        return np.concatenate(
            [p.detach().double().numpy().ravel() for p in self.module.parameters()]
        )

    def with_vector(self, v) -> ViTTail:
        torch = _torch()
        v = np.asarray(v, dtype=np.float64)
        if v.shape != (self.size,):
            raise ValueError(
                f"this tail has {self.size} parameters, got a vector of shape {v.shape}"
            )
        module = copy.deepcopy(self.module)
        offset = 0
        with torch.no_grad():
            for p in module.parameters():
                n = p.numel()
                p.copy_(torch.from_numpy(v[offset : offset + n].reshape(p.shape)).to(p.dtype))
                offset += n
        return ViTTail(module, self.base)

    @property
    def weights(self) -> np.ndarray:
        return self.module.head.weight.detach().numpy().astype(np.float64)

    @property
    def bias(self) -> np.ndarray:
        return self.module.head.bias.detach().numpy().astype(np.float64)

    #: the model ``he-cls`` evaluates is the tail's linear head (on rows the client computes)
    kind = "linear"

    def describe(self) -> str:
        return f"last {len(self.module.blocks)} ViT block(s) + norm + linear head ({self.size:,} parameters)"

    def compile_plan(self, context, *, layout: str):
        """The server's compiled plan of the tail's linear head."""
        from .. import he

        return he.LinearPlan.compile(context, self.weights, self.bias, layout=layout)

    def backbone_state_dict(self) -> dict:
        """The full ViT's state dict with this tail's blocks and final norm in place of the
        base model's (the frozen front and no classifier head): a checkpoint ``--weights PATH``
        loads, so tokens can be extracted from the federatedly fine-tuned model."""
        if self.base is None:
            raise ModelError(
                "this tail was not cut from a ViT (ViTTail.from_vit): there is no frozen front to merge"
            )
        state = {
            k: v.detach().clone().contiguous()
            for k, v in self.base.state_dict().items()
            if not k.startswith("head.")
        }
        depth = len(self.base.blocks)
        first = depth - len(self.module.blocks)
        for key, value in self.module.state_dict().items():
            if key.startswith("blocks."):
                index, rest = key[len("blocks.") :].split(".", 1)
                target = f"blocks.{first + int(index)}.{rest}"
            elif key.startswith("norm."):
                target = key
            else:
                continue  # the tail's own linear head is not part of the backbone
            if target not in state or state[target].shape != value.shape:
                raise ModelError(
                    f"tail parameter {key} does not map onto the base model ({target})"
                )
            state[target] = value.detach().clone().to(state[target].dtype).contiguous()
        return state

    # ------------------------------------------------------------------ evaluation
    def head_features(self, tokens) -> np.ndarray:
        """The normalised [CLS] rows the head reads (what ``he-cls`` encrypts)."""
        torch = _torch()
        self.module.eval()
        with torch.no_grad():
            out = [
                self.module.features(torch.from_numpy(np.ascontiguousarray(tokens[i : i + 64])))
                for i in range(0, len(tokens), 64)
            ]
        return torch.cat(out).double().numpy()

    def logits(self, tokens) -> np.ndarray:
        x = self.head_features(tokens)
        return x @ self.weights.T + self.bias

    def predict(self, tokens) -> np.ndarray:
        return self.logits(tokens).argmax(axis=1)

    def accuracy(self, tokens, y) -> float:
        return float(np.mean(self.predict(tokens) == np.asarray(y)))

    # ------------------------------------------------------------------ training
    def fit(
        self,
        tokens,
        y,
        *,
        epochs: int,
        learning_rate: float,
        batch_size: int,
        weight_decay: float,
        rng: np.random.Generator,
    ) -> ViTTail:
        """Local SGD with momentum on the cross-entropy; returns the trained copy."""
        torch = _torch()
        tail = ViTTail(copy.deepcopy(self.module), self.base)
        module = tail.module
        module.train()
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        # the blocks keep a smaller step than the freshly initialised head
        opt = torch.optim.SGD(
            [
                {
                    "params": list(module.blocks.parameters()) + list(module.norm.parameters()),
                    "lr": learning_rate * 0.02,
                },
                {"params": module.head.parameters(), "lr": learning_rate},
            ],
            momentum=0.9,
            weight_decay=weight_decay,
        )
        x = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.float32))
        target = torch.from_numpy(np.asarray(y, dtype=np.int64))
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for start in range(0, len(x), batch_size):
                idx = order[start : start + batch_size]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(module(x[idx]), target[idx])
                loss.backward()
                opt.step()
        module.eval()
        return tail
