"""The bench worker's measuring parts and the bench's configuration, without training."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest
import torch

from jumpray.errors import ConfigError
from jumpray.jobs import _bench_worker as bench_worker
from jumpray.jobs import bench
from jumpray.jobs._bench_worker import (
    KeptRecorder,
    PeakMemory,
    StepClock,
    _detection_fields,
    _is_channels_last,
    _open_gates,
    run_speed_spec,
    selecting_epoch,
)
from jumpray.train.local import ArraySet
from jumpray.train.methods import Batch, StepOutput, build_method


class _FakeMethod:
    """Keeps the samples whose idx is even in epoch 1, odd ones in epoch 2."""

    def train_step(self, batch: Batch, *, epoch: int) -> StepOutput:
        return StepOutput(0.0, (batch.idx % 2) == int(epoch % 2 == 0))


def _batch(idx, dummy=False):
    idx = torch.tensor(idx)
    return Batch(torch.zeros(len(idx), 1, 2, 2), idx % 3, idx, dummy=dummy)


def test_kept_recorder_holds_the_last_visit_of_each_sample():
    method = _FakeMethod()
    rec = KeptRecorder(6)

    def step(idx, epoch, dummy=False):  # what train_epoch does with its on_batch hook
        batch = _batch(idx, dummy=dummy)
        rec.on_batch(batch, method.train_step(batch, epoch=epoch))

    for idx in ([0, 1, 2], [3, 4, 5]):
        step(idx, epoch=1)  # kept = idx even
    assert rec.kept.tolist() == [True, False, True, False, True, False]
    step([5, 4, 3, 2, 1, 0], epoch=2)  # kept = idx odd, any order
    step([1, 3], epoch=1, dummy=True)  # a dummy step records nothing
    assert rec.kept.tolist() == [False, True, False, True, False, True]


def test_peak_memory_sees_a_tensor_allocated_and_freed_inside():
    with PeakMemory(torch.device("cpu"), interval_s=0.005) as mem:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        # Until the sampler has seen it (its thread can wait long on a busy box), at most 10 s.
        deadline = time.monotonic() + 10
        while mem.peak - mem.baseline < 60 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.005)
        del x
    assert 60 <= mem.above_baseline_mb <= 64 + 40


def test_detection_fields_flag_the_samples_not_kept():
    given = torch.tensor([0, 1, 2, 3, 4, 5])
    clean = torch.tensor([0, 1, 2, 0, 0, 5])  # idx 3 and 4 are wrong labels
    train = ArraySet(torch.zeros(6, 1, 2, 2, dtype=torch.uint8), given, torch.arange(6), clean)
    kept = torch.tensor([True, True, False, False, True, True])
    f = _detection_fields("jumpteaching", kept, train)
    # flagged {2, 3}: one of them wrong -> P 1/2; wrong {3, 4}: one flagged -> R 1/2
    assert f["precision"] == pytest.approx(0.5) and f["recall"] == pytest.approx(0.5)
    assert f["f1"] == pytest.approx(0.5)
    assert f["selection_precision"] == pytest.approx(3 / 4)  # kept {0, 1, 4, 5}: 4 is wrong
    assert f["kept_fraction"] == pytest.approx(4 / 6)
    ce = _detection_fields("ce", torch.ones(6, dtype=torch.bool), train)
    assert ce["f1"] is None and ce["precision"] is None and ce["selection_precision"] == 4 / 6


def test_configs_differ_only_in_the_method_and_take_overrides():
    cfgs = bench.bench_configs(
        "quick", list(bench.METHODS), overrides=["train.lr=0.02", "seed=3"], threads=2
    )
    assert {n: c.method.name for n, c in cfgs.items()} == {
        "jumpteaching": "jumpteaching",
        "ce": "ce",
        "coteaching": "coteaching",
        "jocor": "jocor",
        "cleanlab": "ce",
    }
    dumps = []
    for cfg in cfgs.values():
        d = cfg.model_dump()
        d["method"].pop("name")
        dumps.append(d)
    assert all(d == dumps[0] for d in dumps)
    cfg = cfgs["jumpteaching"]
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.seed) == (6, 128, 0.02, 3)
    assert cfg.train.num_threads == 2
    assert cfg.jump.warmup_epochs == cfg.method.num_gradual == 2
    # the user cannot make the runs differ by method name
    assert (
        bench.bench_configs("tiny", ["ce"], overrides=["method.name=jocor"])["ce"].method.name
        == "ce"
    )


def test_bad_method_names_and_a_missing_cleanlab_are_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match="unknown.*choose from jumpteaching, ce"):
        bench._parse_methods("jumpteaching,dividemix")
    assert bench._parse_methods("cleanlab,ce,jumpteaching") == ["jumpteaching", "ce", "cleanlab"]
    real = importlib.util.find_spec
    monkeypatch.setattr(
        bench.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "cleanlab" else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"pip install 'jumpray\[bench\]'"):
        bench._parse_methods("jumpteaching,cleanlab")
    assert bench._parse_methods("jumpteaching,ce") == ["jumpteaching", "ce"]


def test_fewer_than_two_epochs_is_refused():
    with pytest.raises(ConfigError, match="at least 2"):
        bench.bench_configs("tiny", ["ce"], overrides=["train.epochs=1"])


def test_paper_profile_gives_every_method_one_backbone_batch_and_the_gpu_path():
    cfgs = bench.bench_configs("paper", ["jumpteaching", "ce", "coteaching", "jocor"])
    for cfg in cfgs.values():
        assert cfg.model.backbone == "preact_resnet18" and cfg.train.batch_size == 128
        assert cfg.train.amp == "bf16" and cfg.train.channels_last is True
    # the profile's values sit below the user's overrides
    mine = bench.bench_configs("paper", ["ce"], overrides=["model.backbone=cnn28"])["ce"]
    assert mine.model.backbone == "cnn28" and mine.train.amp == "bf16"
    assert all(p["timing"]["rounds"] >= 5 for n, p in bench.PROFILES.items() if n != "tiny")


def test_timing_steps_run_where_every_method_selects_at_full_rate():
    cfg = bench.bench_configs("quick", ["jumpteaching"])["jumpteaching"]
    assert selecting_epoch(cfg) == 2
    assert (
        selecting_epoch(
            cfg.model_copy(update={"method": cfg.method.model_copy(update={"num_gradual": 5})})
        )
        == 5
    )


def test_jump_teaching_gates_start_open_for_the_timing_steps():
    cfg = bench.bench_configs("tiny", ["jumpteaching"])["jumpteaching"]
    method = build_method(cfg, num_classes=10, num_samples=8, in_channels=1)
    assert not method.flags.gate(torch.arange(8)).any()  # a fresh run: nothing flagged yet
    _open_gates(method, cfg)
    assert method.flags.gate(torch.arange(8)).all() and method.flags.interval == cfg.jump.interval
    ce = build_method(
        bench.bench_configs("tiny", ["ce"])["ce"], num_classes=10, num_samples=8, in_channels=1
    )
    _open_gates(ce, cfg)  # nothing to open: no error
    assert not hasattr(ce, "flags")


def test_channels_last_is_read_from_the_weights_layout():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 8, 3))
    assert _is_channels_last(net) is False  # the first conv (1 channel) is both; the second tells
    assert _is_channels_last(net.to(memory_format=torch.channels_last)) is True
    assert _is_channels_last(torch.nn.Linear(3, 2)) is False


def test_step_clock_keeps_each_steps_rate_and_their_median(monkeypatch):
    ticks = iter([10.0, 10.5, 11.5, 11.75, 14.75])  # steps of 0.5, 1, 0.25, 3 s
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    clock = StepClock(torch.device("cpu"))
    for n in (64, 64, 64, 96):
        clock.on_batch(_batch(list(range(n))), StepOutput(0.0, torch.ones(n, dtype=torch.bool)))
    assert clock.rates == pytest.approx([128.0, 64.0, 256.0, 32.0])
    assert clock.median_samples_per_s() == pytest.approx(96.0)  # one slow step moves it little


def test_step_clock_restart_times_the_next_step_from_now(monkeypatch):
    ticks = iter([0.0, 100.0, 101.0])  # made at 0, restarted at 100 (another method's turn)
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    clock = StepClock(torch.device("cpu"))
    clock.restart()
    clock.on_batch(_batch(list(range(8))), StepOutput(0.0, torch.ones(8, dtype=torch.bool)))
    assert clock.rates == pytest.approx([8.0])


def _tiny_npz(path, n=96):
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 10, (n,), generator=g).numpy()
    np.savez(
        path,
        image=torch.rand(n, 1, 28, 28, generator=g).numpy(),
        given_label=label,
        clean_label=label,
        test_image=torch.rand(8, 1, 28, 28, generator=g).numpy(),
        test_label=label[:8],
        realized_rate=np.float64(0.0),
    )
    return path


def test_speed_run_times_every_method_in_one_process_taking_turns(tmp_path, monkeypatch):
    names = ["jumpteaching", "ce", "coteaching"]
    configs = bench.bench_configs("tiny", names)
    turns = []
    real_steps = bench_worker.TimedMethod.steps

    def steps(self, num_steps, clock=None):
        if clock is not None:
            turns.append((self.method.__class__.__name__, num_steps))
        return real_steps(self, num_steps, clock)

    monkeypatch.setattr(bench_worker.TimedMethod, "steps", steps)
    row = run_speed_spec(
        {
            "phase": "speed",
            "round": 1,
            "data": str(_tiny_npz(tmp_path / "d.npz")),
            "configs": {n: configs[n].model_dump() for n in names},
            "device": "cpu",
            "steps": 5,
            "warmup_steps": 1,
            "block": 2,
        }
    )
    assert row["phase"] == "speed" and row["round"] == 1 and row["steps"] == 5
    assert list(row["methods"]) == names
    for figures in row["methods"].values():
        assert figures["num_samples"] == 5 * 32  # tiny: batch 32
        assert figures["samples_per_s"] > 0 and figures["samples_per_cpu_s"] > 0
    # turns of 2, 2, then the last step; the order rotates from one turn to the next
    kinds = [k for k, _ in turns]
    assert [n for _, n in turns] == [2] * 6 + [1] * 3
    assert kinds[:3] != kinds[3:6] and sorted(kinds[:3]) == sorted(kinds[3:6])
