"""Privacy evaluation: what each party observes (threat models, from the bytes hevit.federated
sends), and attacks that turn observations into tokens, images or a distinguishing advantage.

Threat models and attack algorithms are separate: :mod:`.threat_models` produces observations
from the code that really sends them; the attack modules consume observations.
"""

from .analytic import invert_linear_layer, invert_patch_embedding
from .ciphertext import PublicAdversary, decode_as_plaintext
from .distinguishing import GameResult, ciphertext_features, distinguishing_game
from .optimization import feature_inversion, inverting_gradients
from .threat_models import (
    THREAT_MODELS,
    ThreatModel,
    head_delta,
    message_payload,
    paper_setting_gradients,
    plain_update_delta,
    victim_client,
)
from .token_recovery import cosine_to_truth, recover_tokens

__all__ = [
    "THREAT_MODELS",
    "GameResult",
    "PublicAdversary",
    "ThreatModel",
    "ciphertext_features",
    "cosine_to_truth",
    "decode_as_plaintext",
    "distinguishing_game",
    "feature_inversion",
    "head_delta",
    "invert_linear_layer",
    "invert_patch_embedding",
    "inverting_gradients",
    "message_payload",
    "paper_setting_gradients",
    "plain_update_delta",
    "recover_tokens",
    "victim_client",
]
