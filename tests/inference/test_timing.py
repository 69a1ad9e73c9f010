"""rfcn.inference.timing: the one timing loop (interleaved runs), the per-stage timers and the
throughput measurement built on them. Only call order and bookkeeping are checked, never
how long anything took."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rfcn.inference.timing import StageTimer, interleaved, measure_throughput

CPU = torch.device("cpu")


def test_interleaved_alternates_and_keeps_only_the_timed_runs() -> None:
    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = interleaved(fns, runs=3, warmup=2, device=CPU)
    assert calls == ["a", "b"] * 5
    assert set(times) == {"a", "b"}
    assert all(len(v) == 3 and all(t >= 0 for t in v) for v in times.values())


def test_interleaved_commits_timed_runs_and_discards_warm_ups() -> None:
    timer = StageTimer(CPU)
    stage = nn.Identity()
    timer.wrap(stage, "forward", "stage")
    times = interleaved({"m": lambda: stage(torch.zeros(1))}, runs=2, warmup=1, device=CPU,
                        timers={"m": timer})
    assert len(timer.history["stage"]) == 2 and timer.history["total"] == times["m"]
    for named, other, total in zip(timer.history["stage"], timer.history["other"],
                                   timer.history["total"], strict=True):
        assert named <= total and other == pytest.approx(max(total - named, 0.0))
    assert set(timer.medians()) == {"stage", "other", "total"}


def test_stage_timer_adds_up_a_stage_called_twice_and_keeps_the_outputs() -> None:
    timer = StageTimer(CPU)
    box = nn.Linear(2, 2)
    expected = box(torch.ones(1, 2))
    timer.wrap(box, "forward", "linear")
    assert torch.equal(box(torch.ones(1, 2)), expected)
    box(torch.ones(1, 2))
    first = timer.current["linear"]
    timer.commit(total=first + 1.0)
    assert timer.history["other"] == [pytest.approx(1.0)] and timer.current == {}
    timer.current["linear"] = 5.0
    timer.discard()
    assert timer.current == {} and len(timer.history["linear"]) == 1


class _Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.grad_enabled: list[bool] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.calls += 1
        self.grad_enabled.append(torch.is_grad_enabled())
        return [{"boxes": torch.zeros(0, 4)} for _ in images]


def test_measure_throughput_runs_warmup_plus_runs_in_eval_without_grad() -> None:
    model = _Counting().train()
    stats = measure_throughput(model, torch.rand(3, 8, 8), CPU, runs=3, warmup=2)
    assert model.calls == 5 and not model.training and not any(model.grad_enabled)
    assert stats["runs"] == 3
    assert stats["images_per_second"] == pytest.approx(1.0 / stats["seconds_per_image"])


def test_measure_throughput_without_warmup() -> None:
    model = _Counting()
    assert measure_throughput(model, torch.rand(3, 4, 4), CPU, runs=1, warmup=0)["runs"] == 1
    assert model.calls == 1
