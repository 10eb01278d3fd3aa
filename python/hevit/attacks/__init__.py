"""Privacy evaluation: what each strategy lets an adversary observe (threat models), and attacks
that turn observations into reconstructed images.

Threat models and attack algorithms are separate: :mod:`.threat_models` produces
:class:`Observation` objects from a victim's image under a strategy; the attack modules consume
observations and never see the victim directly.
"""

from .analytic import invert_linear_layer, invert_patch_embedding
from .ciphertext import ciphertext_only_reconstruction
from .optimization import feature_inversion, inverting_gradients
from .threat_models import THREAT_MODELS, Observation, ThreatModel, Victim, observe

__all__ = [
    "THREAT_MODELS",
    "Observation",
    "ThreatModel",
    "Victim",
    "ciphertext_only_reconstruction",
    "feature_inversion",
    "invert_linear_layer",
    "invert_patch_embedding",
    "inverting_gradients",
    "observe",
]
