"""benchmarks/bench_generation.py's LLaVA training-step comparison does the same work in both
libraries: same first loss, same AdamW updates of the projector and the LLM, the vision towers
untouched (a tiny LLaVA on the CPU)."""

import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from test_vlm import IMG, _llava, _pixels

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_generation.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_generation", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_llava_train_step_same_work_in_both_libraries(tmp_path):
    bench = _bench()
    ref, ours = _llava(tmp_path, "llama")
    towers = {k: v.clone() for k, v in ours.visual.state_dict().items()}
    before = ours.projector.fc1.weight.detach().clone()
    g = torch.Generator().manual_seed(3)
    ids = torch.cat([torch.full((2, 1), 2), torch.full((2, 4), IMG), torch.randint(3, IMG, (2, 6), generator=g)], 1)
    result = bench.train_step_times(ref, ours, _pixels(2), ids, answer_tokens=3, repeats=2, dev=torch.device("cpu"))
    losses = result["first_loss"]
    assert set(losses) == {"transformers", "vlkit", "vlkit_lm_loss"}
    assert max(abs(v - losses["transformers"]) for v in losses.values()) < 1e-5
    assert result["batch"] == 2 and result["tokens"] == 11
    for clock in ("median_s", "median_cpu_s"):
        assert set(result[clock]) == set(losses) and min(result[clock].values()) > 0
    # three AdamW steps each on the same batch: the trained parts moved alike, the towers not at all
    assert not torch.equal(ours.projector.fc1.weight, before)
    assert torch.allclose(ours.projector.fc1.weight, ref.model.multi_modal_projector.linear_1.weight, atol=1e-5)
    assert torch.allclose(ours.llm.tokens.weight, ref.get_input_embeddings().weight, atol=1e-5)  # tied head
    assert all(torch.equal(v, ours.visual.state_dict()[k]) for k, v in towers.items())
    assert all(not p.requires_grad for p in ours.visual.parameters())


def test_timed_reports_wall_and_cpu_seconds():
    bench = _bench()
    wall, cpu = bench.timed(lambda: sum(i * i for i in range(200_000)), lambda: None)
    assert wall > 0 and cpu > 0
