"""The README's API example is code a user will paste: it must run and mean what it says."""

import re
from pathlib import Path

import numpy as np

from hevit import he

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs_and_matches_numpy():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    ref = he.reference.linear(scope["x"], scope["W"], scope["b"])
    tol = he.reference.linear_tolerance(scope["params"], scope["W"], scope["x"], scope["plan"])
    assert scope["logits"].shape == (4, 3)
    assert np.abs(scope["logits"] - ref).max() <= tol
