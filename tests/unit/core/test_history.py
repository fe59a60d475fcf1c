"""Per-sample training history: hand-computed running means, top-k merging, state round trip."""

from __future__ import annotations

import copy

import pytest
import torch

from jumpray.core import SampleHistory, merge_top_k


def test_merge_top_k_by_hand():
    labels, values = merge_top_k(
        torch.tensor([[2, 0, -1]]),
        torch.tensor([[0.5, 0.3, 0.0]]),
        torch.tensor([[0, 3]]),
        torch.tensor([[0.4, 0.25]]),
        3,
    )
    # class 0: .3 + .4 = .7; class 2: .5; class 3: .25; the empty slot is dropped
    assert labels.tolist() == [[0, 2, 3]]
    torch.testing.assert_close(values, torch.tensor([[0.7, 0.5, 0.25]]))


def test_merge_top_k_ties_go_to_the_lower_label_and_empty_slots_stay_empty():
    labels, values = merge_top_k(
        torch.tensor([[-1, -1]]),
        torch.zeros(1, 2),
        torch.tensor([[3, 1]]),
        torch.tensor([[0.5, 0.5]]),
        3,
    )
    assert labels.tolist() == [[1, 3, -1]] and values.tolist() == [[0.5, 0.5, 0.0]]


def _probs(rows):
    return torch.tensor(rows, dtype=torch.float32)


# Three epochs of probabilities for samples 0 and 1 (C = 3), visited once per epoch.
EPOCHS = [
    _probs([[0.6, 0.3, 0.1], [0.25, 0.15, 0.6]]),
    _probs([[0.4, 0.5, 0.1], [0.12, 0.08, 0.8]]),
    _probs([[0.2, 0.7, 0.1], [0.35, 0.25, 0.4]]),
]
GIVEN = torch.tensor([0, 1])


def _run(history: SampleHistory, order=(0, 1)) -> SampleHistory:
    for epoch, probs in enumerate(EPOCHS):
        for i in order:  # one batch per sample, in the given order
            history.record(torch.tensor([i]), GIVEN[[i]], probs[[i]], epoch=epoch)
        history.commit(*history.pending())
    return history


def test_running_mean_is_the_hand_mean():
    h = _run(SampleHistory(2, 3))
    out = h.lookup(torch.tensor([0, 1]))
    mean = torch.stack(EPOCHS).mean(dim=0)
    torch.testing.assert_close(out["prob_given"], mean[[0, 1], [0, 1]])
    # sample 0: mean [.4, .5, .1] -> classes 1, 0, 2; sample 1: [.24, .16, .6] -> 2, 0, 1
    assert out["top_labels"].tolist() == [[1, 0, 2], [2, 0, 1]]
    torch.testing.assert_close(out["top_probs"][0], torch.tensor([0.5, 0.4, 0.1]))
    assert out["visits"].tolist() == [3.0, 3.0]
    assert torch.isnan(out["clean_rate"]).all()  # no selection epoch counted


def test_record_order_within_an_epoch_does_not_matter():
    a = _run(SampleHistory(2, 3)).state_dict()
    b = _run(SampleHistory(2, 3), order=(1, 0)).state_dict()
    for name in ("top_labels", "top_sums", "given_sum", "weight"):
        assert torch.equal(a[name], b[name])


def test_ema_and_from_epoch():
    h = _run(SampleHistory(2, 3, ema=0.5))
    # bias-corrected EMA of sample 0's p(class 0): (.125 * .6 + .25 * .4 + .5 * .2) / .875
    expected = (0.125 * 0.6 + 0.25 * 0.4 + 0.5 * 0.2) / 0.875
    assert h.lookup(torch.tensor([0]))["prob_given"].item() == pytest.approx(expected, rel=1e-6)
    late = _run(SampleHistory(2, 3, from_epoch=1))
    assert late.lookup(torch.tensor([1]))["prob_given"].item() == pytest.approx(0.165, rel=1e-6)
    assert late.lookup(torch.tensor([1]))["visits"].item() == 2.0


def test_top_k_below_c_keeps_the_largest_running_sums():
    h = _run(SampleHistory(2, 3, top_k=2))
    out = h.lookup(torch.tensor([0, 1]))
    # p(given) stays exact; sample 0's sums: class 0 [.6, .4, .2 -> 1.2], class 1 [.3, .5, .7]
    torch.testing.assert_close(out["prob_given"], torch.tensor([0.4, 0.16]))
    assert out["top_labels"][0].tolist() == [1, 0]
    torch.testing.assert_close(out["top_probs"][0], torch.tensor([0.5, 0.4]))
    # sample 1 epoch by epoch: {2: .6, 0: .25}, + {2: .8, 0: .12}, + {2: .4, 0: .35}: class 1
    # never enters the top 2
    assert out["top_labels"][1].tolist() == [2, 0]
    torch.testing.assert_close(out["top_probs"][1], torch.tensor([1.8, 0.72]) / 3)


def test_clean_rate_counts_committed_flags():
    h = SampleHistory(3, 2)
    h.count_flags(torch.tensor([0, 1, 2]), torch.tensor([True, False, True]))
    h.count_flags(torch.tensor([2, 0]), torch.tensor([False, True]))
    out = h.lookup(torch.tensor([0, 1, 2]))
    torch.testing.assert_close(out["clean_rate"], torch.tensor([1.0, 0.0, 0.5]))


def test_state_round_trip_and_mismatch():
    a = _run(SampleHistory(2, 3))
    b = SampleHistory(2, 3)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]) if torch.is_tensor(value) else True
    with pytest.raises(ValueError, match="resume with the same shards"):
        SampleHistory(5, 3).load_state_dict(a.state_dict())
