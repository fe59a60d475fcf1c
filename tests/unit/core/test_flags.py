"""The jump: the gate at visit v is the flag recorded at visit v - J (docs/method.md, 'Jump')."""

from __future__ import annotations

import io

import pytest
import torch

from jumpray.core import JumpFlags

N, BATCH = 23, 5


def model_flag(epoch: int, idx: torch.Tensor) -> torch.Tensor:
    """What a (fake) model state at ``epoch`` decides for samples ``idx``: changes every epoch."""
    return ((idx * 7 + epoch * 3) % 5) < 2


def expected_gate(epoch: int, idx: torch.Tensor, interval: int, initial: bool) -> torch.Tensor:
    if epoch < interval:
        return torch.full(idx.shape, initial)
    return model_flag(epoch - interval, idx)


def run_epoch(
    flags: JumpFlags, epoch: int, gen: torch.Generator
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Visit every sample once, shuffled; return (idx, gate) per batch; commit at the end."""
    order = torch.randperm(N, generator=gen)
    seen = []
    for start in range(0, N, BATCH):
        idx = order[start : start + BATCH]
        gate = flags.gate(idx)
        flags.record(idx, model_flag(epoch, idx))
        # The record is not visible within the epoch.
        assert torch.equal(flags.gate(idx), gate)
        seen.append((idx, gate))
    flags.commit_pending()
    return seen


@pytest.mark.parametrize("interval", [1, 3])
@pytest.mark.parametrize("initial", [False, True])
def test_gate_is_the_flag_recorded_j_visits_earlier(interval, initial):
    flags = JumpFlags(N, interval, initial=initial)
    gen = torch.Generator().manual_seed(0)
    differs_from_current_record = 0
    for epoch in range(7):
        for idx, gate in run_epoch(flags, epoch, gen):
            assert torch.equal(gate, expected_gate(epoch, idx, interval, initial))
            differs_from_current_record += int((gate != model_flag(epoch, idx)).sum())
        # Every sample was refreshed on this visit: the next gate is the flag of visit epoch+1-J.
        assert torch.equal(flags.visits(), torch.full((N,), epoch + 1))
        nxt = expected_gate(epoch + 1, torch.arange(N), interval, initial)
        assert torch.equal(flags.current(), nxt)
    # The fake model changes its mind every epoch, so a gate taken from the current forward pass
    # would have shown up here.
    assert differs_from_current_record > N


def test_j1_hand_example():
    flags = JumpFlags(4, 1)
    idx = torch.tensor([2, 0])
    assert flags.gate(idx).tolist() == [False, False]
    flags.record(idx, torch.tensor([True, False]))
    assert flags.current().tolist() == [False] * 4  # recorded, not committed
    flags.commit_pending()
    assert flags.gate(idx).tolist() == [True, False]
    assert flags.current().tolist() == [False, False, True, False]
    assert flags.visits().tolist() == [1, 0, 1, 0]


def test_unvisited_sample_keeps_its_flag_and_counter():
    flags = JumpFlags(3, 2)
    for value in (True, False):
        flags.commit(torch.tensor([0, 1]), torch.tensor([value, value]))
    # visit 2 of samples 0/1 sees visit 0's True; sample 2 was never visited
    assert flags.gate(torch.tensor([0, 1, 2])).tolist() == [True, True, False]
    flags.commit(torch.tensor([0]), torch.tensor([False]))
    assert flags.gate(torch.tensor([0, 1])).tolist() == [False, True]  # 0 at visit 3 sees visit 1


def test_duplicate_ids_last_write_wins_and_count_once():
    flags = JumpFlags(3, 1)
    flags.commit(torch.tensor([1, 2, 1, 1]), torch.tensor([True, True, True, False]))
    assert flags.current().tolist() == [False, False, True]
    assert flags.visits().tolist() == [0, 1, 1]


def test_out_of_range_idx_names_it():
    flags = JumpFlags(5, 1)
    with pytest.raises(IndexError, match="sample idx 7 out of range"):
        flags.gate(torch.tensor([1, 7]))
    with pytest.raises(IndexError, match="sample idx -1"):
        flags.record(torch.tensor([-1]), torch.tensor([True]))
    with pytest.raises(IndexError, match="sample idx 5"):
        flags.commit(torch.tensor([0, 5]), torch.tensor([True, True]))
    assert flags.visits().tolist() == [0] * 5  # nothing applied
    with pytest.raises(TypeError):
        flags.gate(torch.tensor([0.0]))


def test_pending_in_record_order_and_cleared_by_commit():
    flags = JumpFlags(6, 1)
    flags.record(torch.tensor([4, 1]), torch.tensor([True, False]))
    flags.record(torch.tensor([0]), torch.tensor([1]))  # 0/1 ints are accepted as flags
    idx, val = flags.pending()
    assert idx.tolist() == [4, 1, 0] and idx.dtype == torch.int64
    assert val.tolist() == [True, False, True] and val.dtype == torch.bool
    flags.commit(torch.tensor([3]), torch.tensor([True]))
    assert flags.pending()[0].numel() == 0
    assert flags.current().tolist() == [False, False, False, True, False, False]


def _save_load(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("interval", [1, 3])
def test_state_dict_round_trip_continues_identically(interval):
    gen = torch.Generator().manual_seed(1)
    a = JumpFlags(N, interval)
    for epoch in range(4):
        run_epoch(a, epoch, gen)
    a.record(torch.tensor([0]), torch.tensor([True]))  # a pending record is not saved
    b = JumpFlags(N, interval)
    b.load_state_dict(_save_load(a.state_dict()))
    assert a.pending()[0].tolist() == [0]
    assert b.pending()[0].numel() == 0
    # An empty commit applies nothing and drops a's stray record, so both continue from one state.
    a.commit(torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.bool))
    gen_a = torch.Generator().manual_seed(5)
    gen_b = torch.Generator().manual_seed(5)
    for epoch in range(4, 9):
        seen_a = run_epoch(a, epoch, gen_a)
        seen_b = run_epoch(b, epoch, gen_b)
        for (ia, ga), (ib, gb) in zip(seen_a, seen_b, strict=True):
            assert torch.equal(ia, ib) and torch.equal(ga, gb)
            assert torch.equal(ga, expected_gate(epoch, ia, interval, False))
        assert torch.equal(a.current(), b.current())
        assert torch.equal(a.visits(), b.visits())


def test_load_state_dict_rejects_other_interval():
    state = JumpFlags(N, 1).state_dict()
    with pytest.raises(ValueError, match="jump.interval"):
        JumpFlags(N, 2).load_state_dict(state)


@pytest.mark.parametrize("interval", [1, 3])
def test_two_ranks_with_gathered_commit_match_one_process(interval):
    single = JumpFlags(N, interval)
    ranks = [JumpFlags(N, interval), JumpFlags(N, interval)]
    for epoch in range(6):
        order = torch.randperm(N, generator=torch.Generator().manual_seed(100 + epoch))
        cut = 9 + epoch % 3  # unequal, changing splits: a sample moves between ranks
        parts = [order[:cut], order[cut:]]
        for rank, part in zip(ranks, parts, strict=True):
            for start in range(0, part.numel(), 4):
                idx = part[start : start + 4]
                gate = rank.gate(idx)
                assert torch.equal(gate, single.gate(idx))
                assert torch.equal(gate, expected_gate(epoch, idx, interval, False))
                rank.record(idx, model_flag(epoch, idx))
                single.record(idx, model_flag(epoch, idx))
        gathered = [r.pending() for r in ranks]  # the all-gather
        idx_all = torch.cat([g[0] for g in gathered])
        flags_all = torch.cat([g[1] for g in gathered])
        for r in ranks:
            r.commit(idx_all, flags_all)
        single.commit_pending()
        for r in ranks:
            assert torch.equal(r.current(), single.current())
            assert torch.equal(r.visits(), single.visits())
