"""End-to-end jobs behind the ``hevit`` command line (the CLI only parses arguments)."""

from .encrypted_head import EncryptedHeadReport, run_encrypted_head

__all__ = ["EncryptedHeadReport", "run_encrypted_head"]
