"""Issue 23: the moving average of the weights (`train.ema=true`): its decay ramp, its
updates (a float64 hand loop), skipped steps, its state, a training run whose checkpoint,
evaluation and rebuilt model are the average's, bit-exact resume, and identical averages
under DDP."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from rfcn import assembly
from rfcn.checkpoint import load_checkpoint
from rfcn.engine.ema import ModelEMA, ema_decay, training_weights
from rfcn.engine.trainer import Trainer, TrainerSettings
from rfcn.entrypoints.evaluate import evaluate
from rfcn.entrypoints.train import train

# a short ramp and a low decay: after 3 updates the average is far from the weights
EMA = ["train.ema=true", "train.ema_decay=0.9", "train.ema_tau=2", "train.num_threads=1"]


class _Toy(nn.Module):
    """A linear regression, with BatchNorm (float running statistics, an int64 counter) by
    default; `images`: list of Tensor[3], targets: list of {"y": Tensor[]}."""

    def __init__(self, bn: bool = True) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(3) if bn else nn.Identity()
        self.lin = nn.Linear(3, 1)

    def forward(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        x = self.bn(torch.stack(images))
        y = torch.stack([t["y"] for t in targets])
        return {"loss_mse": ((self.lin(x).squeeze(1) - y) ** 2).mean()}


def _batch(seed: int, bad: bool = False) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    images = list(torch.randn(4, 3, generator=g))
    if bad:
        images[0] = images[0] * float("nan")
    return SimpleNamespace(images=images, targets=[{"y": torch.randn((), generator=g)}
                                                   for _ in images])


def _toy_trainer(tmp_path: Path, model: nn.Module, ddp_model: nn.Module | None = None,
                 ema: ModelEMA | None = None) -> Trainer:
    trainer = Trainer(model=ddp_model or model, model_without_ddp=model,
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                      lr_multiplier=lambda it: 1.0, loader_factory=lambda start: [],
                      device=torch.device("cpu"), output_dir=tmp_path,
                      settings=TrainerSettings(max_iter=10), checkpoint_meta={}, ema=ema)
    trainer.before_train()
    return trainer


def test_decay_ramp() -> None:
    assert ema_decay(0, 0.999, 200) == 0.0
    assert ema_decay(1, 0.999, 200) == pytest.approx(0.999 * (1 - math.exp(-1 / 200)))
    assert ema_decay(200, 0.999, 200) == pytest.approx(0.999 * (1 - 1 / math.e))
    assert ema_decay(10**6, 0.999, 200) == pytest.approx(0.999)
    values = [ema_decay(n, 0.995, 100) for n in range(0, 2000, 50)]
    assert values == sorted(values) and max(values) < 0.995
    for decay, tau in ((0.0, 1.0), (1.0, 1.0), (0.9, 0.0)):
        with pytest.raises(ValueError, match="train.ema_"):
            ModelEMA(nn.Linear(1, 1), decay, tau)


def test_update_equals_a_float64_hand_loop() -> None:
    torch.manual_seed(0)
    model = _Toy()
    ema = ModelEMA(model, decay=0.9, tau=2.0)
    assert not ema.module.training
    assert not any(p.requires_grad for p in ema.module.parameters())
    expected = {k: v.double() for k, v in model.state_dict().items() if v.is_floating_point()}
    for n in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(list(torch.randn(4, 3)), [{"y": torch.zeros(())}] * 4)  # BatchNorm statistics
        ema.update(model)
        d = 0.9 * (1 - math.exp(-n / 2.0))
        for k, v in model.state_dict().items():
            if k in expected:
                expected[k] = d * expected[k] + (1 - d) * v.double()
    state = ema.module.state_dict()
    assert ema.updates == 5
    for k, v in expected.items():
        torch.testing.assert_close(state[k].double(), v, rtol=1e-6, atol=1e-6)
    assert int(state["bn.num_batches_tracked"]) == 5  # counters are copied, not averaged
    assert model.lin.weight.requires_grad  # the training model is untouched


def test_skipped_steps_do_not_update(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Toy()
    ema = ModelEMA(model, decay=0.9, tau=2.0)
    trainer = _toy_trainer(tmp_path, model, ema=ema)
    assert trainer.run_step(_batch(0)).finite and ema.updates == 1
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    result = trainer.run_step(_batch(1, bad=True))
    assert not result.finite and ema.updates == 1
    for k, v in ema.module.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert trainer.run_step(_batch(2)).finite and ema.updates == 2


def test_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    model = _Toy()
    ema = ModelEMA(model, decay=0.9, tau=2.0)
    for _ in range(3):
        with torch.no_grad():
            model.lin.weight.add_(1.0)
        ema.update(model)
    state = ema.state_dict()
    other = ModelEMA(_Toy(), decay=0.9, tau=2.0)
    other.load_state_dict(state)
    assert other.updates == 3
    ema.update(model)
    other.update(model)
    for k, v in ema.module.state_dict().items():
        assert torch.equal(v, other.module.state_dict()[k]), k


def _trainer_checkpoint(tmp_path: Path, ema_on: bool) -> dict:
    torch.manual_seed(0)
    model = _Toy()
    trainer = _toy_trainer(tmp_path, model,
                           ema=ModelEMA(model, decay=0.9, tau=2.0) if ema_on else None)
    trainer.run_step(_batch(0))
    return trainer.state_dict()


def test_checkpoint_layout(tmp_path: Path) -> None:
    plain = _trainer_checkpoint(tmp_path, ema_on=False)
    assert "model_train" not in plain and "ema" not in plain
    assert training_weights(plain) is plain
    averaged = _trainer_checkpoint(tmp_path, ema_on=True)
    assert averaged["ema"]["updates"] == 1
    for k, v in plain["model"].items():  # same run: the raw weights are model_train
        assert torch.equal(v, averaged["model_train"][k]), k
        assert torch.equal(v, training_weights(averaged)["model"][k]), k
    assert not torch.equal(averaged["model"]["lin.weight"], averaged["model_train"]["lin.weight"])


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory: pytest.TempPathFactory, synthetic_cache: Path, tiny_cfg) -> Path:
    """3 iterations with EMA, evaluated (and best.pt written) at the end."""
    out = tmp_path_factory.mktemp("ema-run")
    train(tiny_cfg(out, synthetic_cache, *EMA, "train.eval_period=3"))
    return out


def test_checkpoint_evaluation_and_tools_use_the_average(
    ema_run: Path, tmp_path: Path, compose
) -> None:
    last = load_checkpoint(ema_run / "checkpoints" / "last.pt")
    assert last["iteration"] == 3 and last["ema"]["updates"] == 3
    assert set(last["model"]) == set(last["model_train"])
    assert any(not torch.equal(v, last["model_train"][k])
               for k, v in last["model"].items() if v.is_floating_point())
    best = load_checkpoint(ema_run / "checkpoints" / "best.pt")
    for k, v in last["model"].items():
        assert torch.equal(v, best["model"][k]), k
    # eval / infer / export rebuild the average
    rebuilt = assembly.restore_model(last, "last.pt").state_dict()
    for k, v in last["model"].items():
        assert torch.equal(v, rebuilt[k]), k
    # training's final evaluation was the average's: tools/eval on last.pt gives its numbers
    cfg = compose("eval", [f"checkpoint={ema_run / 'checkpoints' / 'last.pt'}",
                           f"output_dir={tmp_path / 'eval'}", "num_workers=0"])
    metrics = evaluate(cfg)
    trained = json.loads((ema_run / "metrics.json").read_text())
    for key in ("AP", "AP50", "per_class"):
        assert metrics[key] == trained[key], key


def test_resume_with_ema_is_bit_exact(
    ema_run: Path, tmp_path: Path, synthetic_cache: Path, tiny_cfg
) -> None:
    out = tmp_path / "resumed"
    train(tiny_cfg(out, synthetic_cache, *EMA, "train.eval_period=3", "train.max_iter=2"))
    half = load_checkpoint(out / "checkpoints" / "last.pt")
    assert half["ema"]["updates"] == 2
    train(tiny_cfg(out, synthetic_cache, *EMA, "train.eval_period=3", "train.resume=true"))
    resumed = load_checkpoint(out / "checkpoints" / "last.pt")
    reference = load_checkpoint(ema_run / "checkpoints" / "last.pt")
    assert resumed["iteration"] == 3 and resumed["ema"] == reference["ema"]
    for key in ("model_train", "model"):
        for k, v in reference[key].items():
            assert torch.equal(v, resumed[key][k]), (key, k)
    # "model" is the average: one more update of the half-way average by the final weights
    weight = 1 - ema_decay(3, 0.9, 2.0)
    for k, v in resumed["model"].items():
        raw = resumed["model_train"][k]
        step = half["model"][k].lerp(raw, weight) if v.is_floating_point() else raw
        assert torch.equal(v, step), k


def test_resume_model_loads_the_raw_weights(
    ema_run: Path, tmp_path: Path, synthetic_cache: Path, tiny_cfg
) -> None:
    ckpt = load_checkpoint(ema_run / "checkpoints" / "last.pt")
    cfg = tiny_cfg(tmp_path, synthetic_cache, *EMA)
    model = assembly.resume_model(cfg.model, len(ckpt["class_names"]), ckpt, "last.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["model_train"][k]), k


# ---- DDP -------------------------------------------------------------------------------------


def _ddp_worker(rank: int, store_file: str, result_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank,
                            world_size=2)
    try:
        torch.manual_seed(rank)  # different initial weights: DDP gives every rank rank 0's
        model = _Toy(bn=False)  # CPU BatchNorm statistics would be per process
        wrapped = nn.parallel.DistributedDataParallel(model)
        ema = ModelEMA(model, decay=0.9, tau=2.0)  # after the wrapper, as build_trainer
        trainer = _toy_trainer(Path(result_dir), model, wrapped, ema=ema)
        for i in range(4):
            trainer.run_step(_batch(10 * i + rank))  # each rank its own data
        state = {k: v.clone() for k, v in ema.module.state_dict().items()}
        Path(result_dir, f"{rank}.pkl").write_bytes(pickle.dumps((ema.updates, state)))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_keep_identical_averages(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    (n0, s0), (n1, s1) = (pickle.loads((tmp_path / f"{r}.pkl").read_bytes()) for r in range(2))
    assert n0 == n1 == 4
    for k, v in s0.items():
        assert torch.equal(v, s1[k]), k
