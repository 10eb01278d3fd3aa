"""A key holder's memory of what it has released: one commitment per round, one budget per key set.

The flooding noise covers ``max_decryptions`` releases under one key set. The ledger counts each
aggregate once (by its digest: releasing the same aggregate again gives the same bits, since the
noise is derived from the digest, and costs nothing), refuses the release past the budget
(:class:`~hevit.errors.DecryptionBudgetError`), and remembers the one aggregate digest the holder
committed to for each (session, task, round): a second, different aggregate for a round is
equivocation and is refused (:class:`~hevit.errors.VerificationError`), before any decryption.
Counts reported to the server (correct predictions, he-cls agreement) are releases too and spend
the budget of the key set that decrypted them.

Given a path, the ledger lives in a file that processes share (Flower starts one ClientApp process
per message): every update takes an exclusive lock and is written atomically before the release
happens, so a crash never loses a release; a damaged file is refused, never reset. Without a path
it lives in memory (one process).
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path

from .._files import atomic_write
from ..errors import DecryptionBudgetError, SerializationError, VerificationError

__all__ = ["ReleaseLedger"]

_FORMAT = "hevit-release-ledger/1"


def _empty() -> dict:
    return {"released": {}, "digests": {}, "commits": {}, "certified": {}, "reports": {}}


class ReleaseLedger:
    """See the module docstring. Thread-safe; ``path=None`` keeps it in memory."""

    def __init__(self, path=None) -> None:
        self.path = None if path is None else Path(path)
        self._state = _empty()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ commitments
    def commit(self, label: str, digest: bytes) -> None:
        """Records that this holder holds ``digest`` as the aggregate of ``label`` (session, task,
        round); refuses a different digest for a label already committed (equivocation)."""
        with self._update() as state:
            held = state["commits"].get(label)
            if held is not None and held != digest.hex():
                raise VerificationError(
                    f"{label}: a second, different aggregate for a round this hospital already "
                    "committed to (the server sent different aggregates): refused, nothing decrypted"
                )
            state["commits"][label] = digest.hex()

    def certify(self, label: str, digest: bytes) -> None:
        """Records that a quorum of hospitals committed to the aggregate this holder committed to
        for ``label``: from now on values derived from it may be reported to the server."""
        with self._update() as state:
            if state["commits"].get(label) != digest.hex():
                raise VerificationError(f"{label}: certificate for an aggregate never committed to")
            state["certified"][label] = digest.hex()

    def certified(self, label: str) -> bytes | None:
        with self._update(write=False) as state:
            held = state["certified"].get(label)
        return None if held is None else bytes.fromhex(held)

    def committed(self, label: str) -> bytes | None:
        with self._update(write=False) as state:
            held = state["commits"].get(label)
        return None if held is None else bytes.fromhex(held)

    # ------------------------------------------------------------------ the budget
    def spend(self, keyset_id: bytes, digest: bytes, limit: int) -> int:
        """Counts the release of aggregate ``digest`` under ``keyset_id`` (once per digest) and
        returns the releases left; raises DecryptionBudgetError past ``limit``."""
        key = bytes(keyset_id).hex()
        with self._update() as state:
            seen = state["digests"].setdefault(key, [])
            used = state["released"].get(key, 0)
            if digest.hex() in seen:
                return int(limit) - used
            if used >= int(limit):
                raise DecryptionBudgetError(
                    f"key set {key[:16]}...: {used} releases already, the flooding policy covers "
                    f"{limit}; generate a new key set"
                )
            state["released"][key] = used + 1
            seen.append(digest.hex())
            return int(limit) - used - 1

    def report_once(self, label: str) -> None:
        """A report derived from a decryption (counts) is sent at most once per label."""
        with self._update() as state:
            if label in state["reports"]:
                raise VerificationError(f"{label}: already reported once; refused")
            state["reports"][label] = True

    def released(self, keyset_id: bytes) -> int:
        with self._update(write=False) as state:
            return int(state["released"].get(bytes(keyset_id).hex(), 0))

    # ------------------------------------------------------------------ storage
    @contextmanager
    def _update(self, *, write: bool = True):
        with self._lock, self._file_lock():
            state = self._read()
            yield state
            if self.path is not None and write:
                atomic_write(self.path, json.dumps({"format": _FORMAT, **state}).encode())
            elif self.path is None:
                self._state = state

    @contextmanager
    def _file_lock(self):
        if self.path is None:
            yield
            return
        import fcntl  # POSIX; a persistent ledger elsewhere fails here, loudly

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self) -> dict:
        if self.path is None:
            return self._state
        if not self.path.exists():
            return _empty()
        try:
            state = json.loads(self.path.read_bytes())
            if state.pop("format", None) != _FORMAT:
                raise ValueError("unknown format")
            if set(state) != set(_empty()):
                raise ValueError("unknown fields")
            if not all(type(v) is int and v >= 0 for v in state["released"].values()):
                raise ValueError("counts must be non-negative integers")
            return state
        except (ValueError, TypeError, AttributeError) as exc:
            raise SerializationError(
                f"release ledger {self.path} is damaged ({exc}); it is never reset silently: "
                "restore it, or generate a new key set and remove it"
            ) from exc
