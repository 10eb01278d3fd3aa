"""[CLS] extraction with ONNX Runtime: provider selection, batching, streaming, progress."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._optional import require
from ..errors import DataError, ModelError, ResourceError
from .export import ExportedModel
from .preprocess import preprocess_images

__all__ = [
    "TTA_VIEWS",
    "ClsExtractor",
    "ExtractionInterrupted",
    "FeatureSet",
    "dihedral_views",
    "gpu_visible",
    "select_providers",
]

#: Test-time augmentation sizes: 1 (none) or the 8 rotations/flips of the square (LC25000 was
#: itself built by rotating and flipping tiles).
TTA_VIEWS = (1, 8)


def dihedral_views(batch: np.ndarray, views: int) -> np.ndarray:
    """(B, 3, H, W) -> (views * B, 3, H, W): view-major stack of the first ``views`` of the 8
    rotations by 0/90/180/270 degrees, each without and with a horizontal flip."""
    if views not in TTA_VIEWS:
        raise ValueError(f"tta must be one of {TTA_VIEWS}, got {views}")
    if views == 1:
        return batch
    if batch.shape[-1] != batch.shape[-2]:
        raise ValueError("8-view test-time augmentation needs square inputs")
    out = []
    for k in range(4):
        rotated = np.rot90(batch, k, axes=(2, 3))
        out.append(rotated)
        out.append(rotated[..., ::-1])
    return np.ascontiguousarray(np.concatenate(out))


log = logging.getLogger(__name__)


class ExtractionInterrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`ClsExtractor.extract_folder`; its message says how many images are
    kept in the resume file (the same call resumes from there)."""


#: A partial extraction is saved at least this often (and at Ctrl-C), so a killed run loses
#: at most this much work.
RESUME_SAVE_SECONDS = 30.0

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def gpu_visible() -> bool:
    """True when the CUDA driver loads and reports at least one device."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return False
    return count.value > 0


def select_providers(requested: str, *, available: list[str], gpu: bool) -> tuple[list[str], str]:
    """Chooses ONNX Runtime execution providers and says why.

    ``requested`` is ``auto`` (CUDA when onnxruntime-gpu is installed and a GPU is visible, else
    CPU), ``cpu`` or ``cuda`` (an error when CUDA cannot be used, never a quiet CPU run).
    """
    cuda_installed = CUDA in available
    if requested == "cpu":
        return [CPU], "CPU requested"
    if requested == "cuda":
        if not cuda_installed:
            raise ModelError(
                "CUDA requested but onnxruntime has no CUDA provider: pip install 'hevit[gpu]'"
            )
        if not gpu:
            raise ModelError("CUDA requested but no GPU is visible to the CUDA driver")
        return [CUDA, CPU], "CUDA requested"
    if requested != "auto":
        raise ValueError(f"providers must be 'auto', 'cpu' or 'cuda', got {requested!r}")
    if cuda_installed and gpu:
        return [CUDA, CPU], "auto: onnxruntime-gpu with a visible GPU"
    if cuda_installed:
        return [CPU], "auto: CPU because the CUDA provider is installed but no GPU is visible"
    return [
        CPU
    ], "auto: CPU because onnxruntime has no CUDA provider (install hevit[gpu] on a GPU machine)"


#: Largest ratio of a feature file member's size to its compressed size (float features
#: compress by ~1.1x; a zip bomb by 1000x).
MAX_EXPANSION = 100
#: Largest decompressed member of a feature file.
MAX_NPZ_BYTES = 8 * 2**30


@dataclass
class FeatureSet:
    """Features of a set of images: (N, D) float32, labels, paths and how they were made."""

    features: np.ndarray
    labels: np.ndarray
    paths: list[str]
    classes: tuple[str, ...]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        f, y = np.asarray(self.features), np.asarray(self.labels)
        if f.dtype.kind != "f" or f.ndim not in (2, 3) or len(f) == 0:
            raise DataError(
                f"features must be a non-empty real (rows, dim) or (rows, tokens, dim) array, "
                f"got {f.dtype} {f.shape}"
            )
        if not np.all(np.isfinite(f)):
            raise DataError("features contain NaN or inf")
        if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(f):
            raise DataError(
                f"{len(f)} feature rows need as many integer labels, got {y.dtype} {y.shape}"
            )
        if len(self.paths) != len(f):
            raise DataError(f"{len(f)} feature rows but {len(self.paths)} paths")
        if len(self.classes) < 2 or y.min() < 0 or y.max() >= len(self.classes):
            raise DataError(
                f"labels must index {len(self.classes)} classes (at least two), "
                f"got labels in [{y.min()}, {y.max()}]"
            )

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            features=self.features.astype(np.float32),
            labels=self.labels.astype(np.int64),
            paths=np.array(self.paths),
            classes=np.array(self.classes),
            metadata=np.array(json.dumps(self.metadata)),
        )
        return path

    @classmethod
    def load(cls, path) -> FeatureSet:
        """Reads a file written by :meth:`save`. Each member's declared size is checked against
        its compressed size before anything is decompressed (``MAX_EXPANSION``, ``MAX_NPZ_BYTES``),
        and a file whose labels name fewer than two classes is refused."""
        path = Path(path)
        try:
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    limit = min(MAX_NPZ_BYTES, max(2**20, MAX_EXPANSION * info.compress_size))
                    if info.file_size > limit:
                        raise ResourceError(
                            f"{path}: member {info.filename} declares {info.file_size:,} bytes "
                            f"from {info.compress_size:,} compressed (limit {limit:,})"
                        )
            with np.load(path, allow_pickle=False) as data:
                missing = {"features", "labels", "paths", "classes", "metadata"} - set(data.files)
                if missing:
                    raise DataError(f"{path}: not a hevit feature file (missing {sorted(missing)})")
                features = cls(
                    features=data["features"],
                    labels=data["labels"],
                    paths=[str(p) for p in data["paths"]],
                    classes=tuple(str(c) for c in data["classes"]),
                    metadata=json.loads(str(data["metadata"])),
                )
        except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
            if isinstance(exc, (DataError, ResourceError)):
                raise
            raise DataError(f"{path}: cannot read the feature file ({exc})") from exc
        if len(np.unique(features.labels)) < 2:
            raise DataError(f"{path}: every row has the same label; classification needs two")
        return features

    def subset(self, indices) -> FeatureSet:
        indices = np.asarray(indices)
        return FeatureSet(
            self.features[indices],
            self.labels[indices],
            [self.paths[i] for i in indices],
            self.classes,
            dict(self.metadata),
        )


class ClsExtractor:
    """Runs an exported [CLS] graph with ONNX Runtime.

    Parameters
    ----------
    exported : ExportedModel
    providers : {"auto", "cpu", "cuda"}
    threads : int, optional
        Intra-op threads on CPU (default: every core this process may use).
    fp16 : bool
        Run in half precision; CUDA only (an error on CPU).
    tta : {1, 8}
        Test-time augmentation: the token is the mean over the 8 rotations/flips of each image
        (8x the compute).
    """

    def __init__(
        self,
        exported: ExportedModel,
        *,
        providers: str = "auto",
        threads: int | None = None,
        fp16: bool = False,
        tta: int = 1,
    ) -> None:
        dihedral_views(np.zeros((0, 3, 2, 2), np.float32), tta)  # validates tta before any work
        ort = require("onnxruntime", "vit")

        chosen, reason = select_providers(
            providers, available=ort.get_available_providers(), gpu=gpu_visible()
        )
        if fp16 and chosen[0] != CUDA:
            raise ModelError(
                "fp16 extraction needs the CUDA provider; on CPU use fp32 or the int8 model"
            )
        path = exported.onnx_path
        if fp16:
            onnx = require("onnx", "vit")
            convert_float_to_float16 = require(
                "onnxruntime.transformers.float16", "vit"
            ).convert_float_to_float16

            fp16_path = str(Path(path).with_suffix(".fp16.onnx"))
            if not os.path.exists(fp16_path):
                onnx.save(convert_float_to_float16(onnx.load(path), keep_io_types=True), fp16_path)
            path = fp16_path
        options = ort.SessionOptions()
        from ..he._arrays import resolve_threads

        threads = resolve_threads(threads)
        options.intra_op_num_threads = int(threads)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=chosen)
        used = self.session.get_providers()[0]
        if used != chosen[0]:
            raise ModelError(f"ONNX Runtime could not start {chosen[0]} (it fell back to {used})")
        self.exported = exported
        self.provider = used
        self.provider_reason = reason
        self.threads = int(threads)
        self.fp16 = fp16
        self.tta = int(tta)
        self.preprocess = exported.preprocess_config
        log.info("ONNX Runtime provider: %s (%s), %d intra-op threads", used, reason, self.threads)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed (B, 3, H, W) float32 -> (B, D) float32 (the mean over the test-time views)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.tta > 1:
            views = self._run(dihedral_views(batch, self.tta))
            return views.reshape(self.tta, len(batch), -1).mean(axis=0)
        return self._run(batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.provider == CUDA:
            binding = self.session.io_binding()
            binding.bind_cpu_input("images", batch)
            binding.bind_output("cls", "cuda")
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0].astype(np.float32)
        return self.session.run(None, {"images": batch})[0]

    def extract_images(self, images) -> np.ndarray:
        return self.run(preprocess_images(list(images), self.preprocess))

    def resume_key(self, folder, indices, batch_size: int) -> str:
        """What a partial extraction must match to be resumed: the graph, views, provider, batch
        size and every input file (path, size, modification time)."""
        import hashlib

        files = []
        for i in indices:
            path = Path(folder.paths[int(i)])
            info = path.stat()
            files.append((str(path), info.st_size, info.st_mtime_ns))
        payload = json.dumps(
            [
                self.exported.key,
                self.exported.onnx_path,
                self.tta,
                self.fp16,
                self.provider,
                int(batch_size),
                files,
            ]
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def extract_folder(
        self,
        folder,
        *,
        indices=None,
        batch_size: int = 16,
        progress: bool = True,
        resume_file=None,
    ) -> FeatureSet:
        """Streams ``folder`` (an :class:`hevit.data.ImageFolder`) in batches; memory stays at one
        batch of images plus the (N, D) result. The progress bar counts images; with test-time
        views each ONNX call runs ``batch_size`` forward passes (``batch_size // tta`` images).

        ``resume_file``: rows done so far are saved there every ``RESUME_SAVE_SECONDS`` and at
        Ctrl-C (then :class:`ExtractionInterrupted` is raised); a later call with the same file,
        graph, images and options continues from them, and the file is removed once the
        extraction completes."""
        tqdm = require("tqdm.auto", "vit").tqdm

        indices = np.arange(len(folder)) if indices is None else np.asarray(indices)
        out = np.empty((len(indices), self.exported.cls_dim), dtype=np.float32)
        step = max(1, batch_size // self.tta)
        key = self.resume_key(folder, indices, batch_size) if resume_file is not None else None
        done = 0 if key is None else _load_partial(resume_file, key, out)
        if done:
            print(f"resuming: {done} of {len(indices)} images already extracted ({resume_file})")
        start = time.perf_counter()
        first = done
        saved_at = time.monotonic()
        bar = tqdm(
            total=len(indices),
            initial=done,
            unit="img",
            desc=f"[CLS] {self.provider}" + (f", {self.tta} views" if self.tta > 1 else ""),
            disable=not progress,
        )
        try:
            for lo in range(done, len(indices), step):
                chunk = indices[lo : lo + step]
                out[lo : lo + len(chunk)] = self.extract_images(folder.load(int(i)) for i in chunk)
                done = lo + len(chunk)
                bar.update(len(chunk))
                if key is not None and time.monotonic() - saved_at > RESUME_SAVE_SECONDS:
                    _save_partial(resume_file, key, out, done)
                    saved_at = time.monotonic()
        except KeyboardInterrupt:
            bar.close()
            if key is None or done == 0:
                raise
            _save_partial(resume_file, key, out, done)
            raise ExtractionInterrupted(
                f"{done} of {len(indices)} images extracted and kept in {resume_file}; run the "
                "same command again to resume"
            ) from None
        bar.close()
        if resume_file is not None:
            Path(resume_file).unlink(missing_ok=True)
        seconds = time.perf_counter() - start
        labels = folder.labels[indices]
        metadata = {
            "model": self.exported.spec,
            "weights": self.exported.weights,
            "onnx": {
                "path": self.exported.onnx_path,
                "opset": self.exported.opset,
                "parity_max_abs": self.exported.parity_max_abs,
            },
            "provider": self.provider,
            "provider_reason": self.provider_reason,
            "threads": self.threads,
            "fp16": self.fp16,
            "tokens": self.exported.tokens,
            "tta": self.tta,
            "preprocess": self.exported.preprocess,
            "data": str(folder.root),
            "seconds": seconds,
            "images_per_second": (len(indices) - first) / seconds if seconds > 0 else float("inf"),
            "resumed_after_images": first,
        }
        return FeatureSet(
            out, labels, [folder.paths[int(i)] for i in indices], folder.classes, metadata
        )


def _save_partial(path, key: str, out: np.ndarray, done: int) -> None:
    """The first ``done`` rows, written atomically (a kill mid-write keeps the previous file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".tmp")
    with open(staging, "wb") as f:
        np.savez(f, key=np.array(key), rows=out[:done])
    os.replace(staging, path)


def _load_partial(path, key: str, out: np.ndarray) -> int:
    """Copies the rows of a matching partial file into ``out``; returns how many (0: none, or a
    file of another extraction, which is then left alone and logged)."""
    path = Path(path)
    if not path.is_file():
        return 0
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                log.warning("%s belongs to another extraction; starting from the first image", path)
                return 0
            rows = data["rows"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("%s is unreadable (%s); starting from the first image", path, exc)
        return 0
    if rows.ndim != 2 or rows.shape[1] != out.shape[1] or len(rows) > len(out):
        log.warning("%s does not fit this extraction; starting from the first image", path)
        return 0
    out[: len(rows)] = rows
    return len(rows)
