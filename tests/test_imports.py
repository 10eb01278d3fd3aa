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
