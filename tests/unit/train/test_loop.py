"""The explicit loop: flag semantics end to end, warm-up vs selection, skipped steps, dummy steps."""

from __future__ import annotations

import pytest
import torch

from jumpray.train.loop import finalize_counts, make_dummy, to_batch, train_epoch
from jumpray.train.seeds import epoch_generator

from ._tiny import N, params, tiny_batches, tiny_config, tiny_method


def _spy(method):
    """Record (epoch-local) what train_step selected and what the flag table recorded, by idx."""
    selected: dict[int, bool] = {}
    recorded: dict[int, bool] = {}
    step, record = method.train_step, method.flags.record

    def spy_step(batch, *, epoch):
        out = step(batch, epoch=epoch)
        selected.update(zip(batch.idx.tolist(), out.selected.tolist(), strict=True))
        return out

    def spy_record(idx, flags):
        recorded.update(zip(idx.tolist(), flags.tolist(), strict=True))
        record(idx, flags)

    method.train_step, method.flags.record = spy_step, spy_record
    return selected, recorded


def test_gate_is_the_flag_written_J_visits_earlier():
    cfg = tiny_config(jump={"interval": 2, "warmup_epochs": 1}, train={"epochs": 4})
    method = tiny_method(cfg)
    selected, recorded = _spy(method)
    sel_hist, rec_hist = [], []
    for epoch in range(4):
        order = torch.randperm(N, generator=torch.Generator().manual_seed(epoch))
        counts = train_epoch(method, tiny_batches(order), epoch=epoch)
        method.end_epoch(epoch)
        sel_hist.append(dict(selected))
        rec_hist.append(dict(recorded))
        selected.clear()
        recorded.clear()
        assert counts["num_samples"] == N and counts["num_dummy_steps"] == 0
        assert method.flags.visits().tolist() == [epoch + 1] * N
    # Warm-up: every sample counts. Epoch 1: the slot of visit 1 - J was never written -> False.
    assert all(sel_hist[0].values())
    assert not any(sel_hist[1].values())
    # Later: exactly the flags recorded two visits earlier, not the current forward's.
    assert sel_hist[2] == rec_hist[0]
    assert sel_hist[3] == rec_hist[1]
    # The flags are not trivial (otherwise the equalities above say little).
    assert 0 < sum(rec_hist[0].values()) < N
    assert rec_hist[0] != rec_hist[1]


def test_nothing_selected_anywhere_skips_the_optimizer_step():
    cfg = tiny_config(jump={"warmup_epochs": 0})
    method = tiny_method(cfg)
    before = params(method)
    counts = train_epoch(method, tiny_batches(), epoch=0)
    assert counts["num_selected"] == 0
    for p0, p1 in zip(before, params(method), strict=True):
        assert torch.equal(p0, p1)
    # The flags of this epoch's forwards were still recorded and are committed at the end.
    assert method.flags.pending()[0].tolist() == list(range(N))
    method.end_epoch(0)
    assert method.flags.visits().tolist() == [1] * N


def test_another_rank_selecting_makes_every_rank_step():
    cfg = tiny_config(jump={"warmup_epochs": 0})
    method = tiny_method(cfg)
    method.global_count = lambda n: n + 1  # "some other rank selected a sample"
    before = params(method)
    train_epoch(method, tiny_batches(), epoch=0, max_batches=1)
    lr, wd = cfg.train.lr, cfg.train.weight_decay
    # Zero loss gradient; the first SGD step applies weight decay only: p <- p - lr * wd * p.
    for p0, p1 in zip(before, params(method), strict=True):
        torch.testing.assert_close(p1, p0 * (1 - lr * wd), rtol=1e-6, atol=1e-7)


def test_a_rank_that_ran_out_takes_dummy_steps_until_all_are_done():
    cfg = tiny_config(jump={"warmup_epochs": 0})
    method = tiny_method(cfg)
    steps = []

    def sync(has_batch: bool) -> bool:  # the other rank has 3 batches, this one 1
        steps.append(has_batch)
        return len(steps) <= 3

    counts = train_epoch(method, tiny_batches()[:1], epoch=0, sync=sync)
    assert steps == [True, False, False, False]
    assert counts["num_dummy_steps"] == 2
    assert counts["num_samples"] == 4  # dummies are not counted
    idx, _ = method.flags.pending()
    assert idx.tolist() == [0, 1, 2, 3]  # nor recorded


def test_dummy_step_needs_a_template():
    method = tiny_method(tiny_config())
    with pytest.raises(RuntimeError, match="dummy_template"):
        train_epoch(method, [], epoch=0, sync=lambda has: True)


def test_make_dummy_takes_two_rows_and_marks_them():
    batch = to_batch(tiny_batches()[0], torch.device("cpu"))
    dummy = make_dummy(batch)
    assert dummy.dummy and not batch.dummy
    assert dummy.idx.tolist() == [0, 1] and dummy.image.shape == (2, 1, 8, 8)


def test_dummy_steps_change_nothing_but_weight_decay():
    cfg = tiny_config(method={"name": "ce"})
    method = tiny_method(cfg)
    before = params(method)
    out = method.train_step(make_dummy(to_batch(tiny_batches()[0], "cpu")), epoch=0)
    assert out.loss == 0.0 and not out.selected.any()
    lr, wd = cfg.train.lr, cfg.train.weight_decay
    for p0, p1 in zip(before, params(method), strict=True):
        torch.testing.assert_close(p1, p0 * (1 - lr * wd), rtol=1e-6, atol=1e-7)


def test_finalize_counts_hand_computed():
    counts = {
        "num_samples": 10,
        "num_selected": 4,
        "num_selected_clean": 3,
        "num_clean": 6,
        "num_known": 10,
        "loss_sum": 5.0,
        "train_time_s": 2.0,
    }
    m = finalize_counts(counts)
    assert m["loss"] == 0.5 and m["selected_fraction"] == 0.4 and m["samples_per_s"] == 5.0
    assert m["precision"] == 0.75 and m["recall"] == 0.5
    assert m["f1"] == pytest.approx(2 * 0.75 * 0.5 / 1.25)
    assert m["data_clean_fraction"] == 0.6


def test_selection_counts_against_clean_labels():
    # Warm-up selects all 12; 9 of them carry their true label (tiny_data flips 3).
    method = tiny_method(tiny_config())
    m = finalize_counts(train_epoch(method, tiny_batches(), epoch=0))
    assert m["num_samples"] == N and m["selected_fraction"] == 1.0
    assert m["precision"] == 0.75 and m["recall"] == 1.0


def test_epoch_generator_depends_on_seed_rank_epoch_only():
    a = torch.rand(3, generator=epoch_generator(1, epoch=2, rank=0))
    assert torch.equal(a, torch.rand(3, generator=epoch_generator(1, epoch=2, rank=0)))
    assert not torch.equal(a, torch.rand(3, generator=epoch_generator(1, epoch=3, rank=0)))
    assert not torch.equal(a, torch.rand(3, generator=epoch_generator(1, epoch=2, rank=1)))


def test_blank_batch_lets_an_empty_rank_step_without_effect():
    from jumpray.data.augment import make_augmenter
    from jumpray.train.worker import _blank_batch

    aug = make_augmenter(image_size=8, channels=1, mean=[0.5], std=[0.5])
    blank = _blank_batch(aug, torch.device("cpu"), channels=1, image_hw=(8, 8))
    assert blank.dummy and blank.image.shape == (2, 1, 8, 8)
    assert blank.image_strong is not None
    method = tiny_method(tiny_config(jump={"warmup_epochs": 0}))
    before = params(method)
    steps = []
    counts = train_epoch(
        method,
        [],
        epoch=0,
        sync=lambda has: len(steps) < 2 and not steps.append(has),
        dummy_template=blank,
    )
    assert steps == [False, False] and counts["num_dummy_steps"] == 2
    assert counts["num_samples"] == 0 and method.flags.pending()[0].numel() == 0
    for p0, p1 in zip(before, params(method), strict=True):
        assert torch.equal(p0, p1)  # nothing selected anywhere: the step was skipped
