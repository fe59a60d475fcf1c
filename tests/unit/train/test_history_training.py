"""Jump-teaching records each sample's history from its own training forward (no extra pass)."""

from __future__ import annotations

import copy

import torch

from jumpray.train.loop import train_epoch

from ._tiny import N, tiny_batches, tiny_config, tiny_method


def _train(method, epochs, *, start=0, spy=None):
    flags_after = []
    for epoch in range(start, epochs):
        method.begin_epoch(epoch)
        train_epoch(method, tiny_batches(), epoch=epoch)
        method.end_epoch(epoch)
        flags_after.append(method.flags.current().clone())
    return flags_after


def test_history_is_the_hand_mean_of_the_training_forward():
    cfg = tiny_config(jump={"warmup_epochs": 1}, train={"epochs": 4})
    method = tiny_method(cfg)
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    record = method.history.record

    def spy(idx, given, probs, *, epoch):
        seen.append((idx.clone(), given.clone(), probs.detach().clone()))
        record(idx, given, probs, epoch=epoch)

    method.history.record = spy
    flags_after = _train(method, 4)
    # By hand: every visit's softmax(logits / T), averaged per idx.
    c = seen[0][2].shape[1]
    sums, counts = torch.zeros(N, c), torch.zeros(N)
    for idx, _, probs in seen:
        sums[idx] += probs
        counts[idx] += 1
    mean = sums / counts[:, None]
    out = method.history.lookup(torch.arange(N))
    assert counts.tolist() == [4.0] * N and out["visits"].tolist() == [4.0] * N
    given = torch.cat([g for _, g, _ in seen[: N // 4]])  # the first epoch's batches: 0..N-1
    torch.testing.assert_close(out["prob_given"], mean[torch.arange(N), given])
    full = torch.zeros(N, c).scatter(1, out["top_labels"], out["top_probs"])
    torch.testing.assert_close(full, mean)  # C = 4 <= top_k: the whole vector
    # Clean rate over the 3 selection epochs: the flags committed at their ends.
    rate = torch.stack(flags_after[1:]).float().mean(dim=0)
    torch.testing.assert_close(out["clean_rate"], rate)


def test_history_survives_a_resume():
    cfg = tiny_config(train={"epochs": 4})
    a = tiny_method(cfg)
    _train(a, 2)
    state = copy.deepcopy(a.state_dict())
    b = tiny_method(cfg.model_copy(update={"seed": 5}))
    b.load_state_dict(state)
    _train(a, 4, start=2)
    _train(b, 4, start=2)
    for name, value in a.history.state_dict().items():
        if torch.is_tensor(value):
            assert torch.equal(value, b.history.state_dict()[name]), name
    assert a.history.lookup(torch.arange(N))["visits"].tolist() == [4.0] * N


def test_an_old_checkpoint_without_history_still_loads():
    cfg = tiny_config()
    a = tiny_method(cfg)
    _train(a, 1)
    state = a.state_dict()
    del state["history"]
    b = tiny_method(cfg)
    b.load_state_dict(state)
    assert b.history.lookup(torch.arange(N))["visits"].sum() == 0
