"""End-to-end jobs behind the ``hevit`` command line (the CLI only parses arguments)."""

from .encrypted_head import EncryptedHeadReport, fit_ridge_head, run_encrypted_head

__all__ = ["EncryptedHeadReport", "fit_ridge_head", "run_encrypted_head"]
