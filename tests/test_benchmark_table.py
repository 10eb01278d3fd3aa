"""The benchmark comparison table words every ratio as "N x faster" or "N x slower"."""

import re

import pytest
from benchmarks.conftest import Row, _table, ratio_words


def test_ratio_words_say_slower_when_we_are_slower():
    assert ratio_words(10.0, 2.0) == "5.0x faster"
    assert ratio_words(2.0, 10.0) == "5.0x slower"
    assert ratio_words(170.0, 178.0, digits=2) == "1.05x slower"
    with pytest.raises(ValueError):
        ratio_words(0.0, 1.0)


class _Timed:
    """What Row.ms_per_image reads from a pytest-benchmark fixture: stats.stats.median (s)."""

    def __init__(self, seconds: float) -> None:
        self.stats = type("S", (), {"stats": type("M", (), {"median": seconds})()})()


def test_table_never_calls_a_slower_hevit_faster():
    rows = [
        Row("hevit sample/latency", "end-to-end", 1, _Timed(0.010)),
        Row("tenseal enc_matmul", "end-to-end", 1, _Timed(0.002)),
        Row("hevit coefficient/latency", "end-to-end", 1, _Timed(0.001)),
        Row("vit_b torch", "features", 1, _Timed(0.170)),
        Row("vit_b onnx-fp32", "features", 1, _Timed(0.178)),
    ]
    rows[-1].extra = {}
    table, _ = _table(rows)
    assert "| 1 | hevit sample/latency | 10.0000 |" in table and "5.0x slower" in table
    assert "2.0x faster" in table and "1.05x slower" in table
    assert not re.search(r"\b0\.\d+x", table)  # no ratio below one, whatever its word
