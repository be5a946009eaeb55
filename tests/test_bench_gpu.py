"""benchmarks/bench_gpu.py runs on the CPU with tiny shapes and writes every row of the table."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("open_clip")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def test_bench_gpu_tiny_cpu_run_writes_every_row(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    result = bench.main(["--device", "cpu", "--tiny", "--iters", "1", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))
    assert [r["row"] for r in written["rows"]] == list(bench.ROWS)
    assert written["tiny"] and written["precision"] == "float32" and written["peak_flops"] is None
    for r in written["rows"]:
        assert r["vlkit"] > 0 and r["transformers"] > 0 and r["ratio"] == pytest.approx(r["vlkit"] / r["transformers"])
    train = written["rows"][0]
    assert train["open_clip"] > 0 and train["flops_per_step"] > 0 and train["mfu"]["vlkit"] is None  # no CPU peak
    assert written["rows"][1]["min_cosine_to_transformers"] > 0.9999  # same weights, same features
    decoding = [r for r in written["rows"] if "same_tokens" in r]
    assert len(decoding) == 5 and all(r["same_tokens"] for r in decoding)  # float32: the greedy tokens agree
