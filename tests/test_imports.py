"""``import hevit`` (and its light sub-packages) must not pull in torch or onnxruntime."""

import subprocess
import sys


def test_light_imports_do_not_load_heavy_frameworks():
    code = (
        "import sys, hevit, hevit.he, hevit.data, hevit.features, hevit.metrics, hevit.attacks, hevit.jobs;"
        "heavy = [m for m in ('torch', 'onnxruntime', 'timm', 'onnx') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_library_code_keeps_no_hidden_global_state():
    """No backend switch or pyplot state in report writers; torch's global RNG is seeded only
    inside fork_rng (the caller's RNG state is restored)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "python" / "hevit"
    offenders = []
    for path in root.rglob("*.py"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            code = line.split("#")[0]
            if "matplotlib.use(" in code or "import matplotlib.pyplot" in code:
                offenders.append(f"{path.name}:{i + 1}: {line.strip()}")
            if "torch.manual_seed(" in code and "``" not in code:
                if not any("fork_rng" in prev for prev in lines[max(0, i - 3) : i]):
                    offenders.append(f"{path.name}:{i + 1}: {line.strip()}")
    assert not offenders, offenders
