"""The four methods on tiny tensors: the masks they compute are the ones their updates use, and a
state dict round trip continues identically."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from jumpray.core import coteaching_masks, jocor_loss
from jumpray.train.loop import to_batch, train_epoch
from jumpray.train.methods import build_method

from ._tiny import C, N, params, tiny_batches, tiny_config, tiny_data, tiny_method

TWO_NET = {"forget_rate": 0.5, "num_gradual": 0}


def _sgd(net, cfg):
    t = cfg.train
    return torch.optim.SGD(
        net.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
    )


def test_coteaching_each_net_learns_from_the_others_small_loss_pick():
    cfg = tiny_config(method={"name": "coteaching", **TWO_NET})
    method = tiny_method(cfg)
    rate = method.current_forget_rate(0)
    assert rate == 0.5
    batch = to_batch(tiny_batches()[0], torch.device("cpu"))
    # The expected update, on copies: the masks from both nets' losses, then net 1's step on mask_1.
    net_1, net_2 = copy.deepcopy(method.nets[0]), copy.deepcopy(method.nets[1])
    loss_1 = F.cross_entropy(net_1(batch.image)[0], batch.given_label, reduction="none")
    loss_2 = F.cross_entropy(net_2(batch.image)[0], batch.given_label, reduction="none")
    mask_1, mask_2 = coteaching_masks(loss_1.detach(), loss_2.detach(), rate)
    assert int(mask_1.sum()) == 2 and not torch.equal(mask_1, mask_2)
    opt = _sgd(net_1, cfg)
    loss_1[mask_1].mean().backward()
    opt.step()

    out = method.train_step(batch, epoch=0)
    assert torch.equal(out.selected, mask_2)  # net 1's own pick, the set it hands to net 2
    assert out.loss == pytest.approx(float(loss_1[mask_1].mean().detach()), rel=1e-5)
    for want, got in zip(params_of(net_1), params(method, 0), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_jocor_updates_on_the_joint_small_loss_set():
    cfg = tiny_config(method={"name": "jocor", **TWO_NET})
    method = tiny_method(cfg)
    batch = to_batch(tiny_batches()[1], torch.device("cpu"))
    net_1, net_2 = copy.deepcopy(method.nets[0]), copy.deepcopy(method.nets[1])
    loss, mask = jocor_loss(
        net_1(batch.image)[0],
        net_2(batch.image)[0],
        batch.given_label,
        co_lambda=cfg.method.co_lambda,
        forget_rate=0.5,
    )
    out = method.train_step(batch, epoch=0)
    assert torch.equal(out.selected, mask) and int(mask.sum()) == 2
    assert out.loss == pytest.approx(float(loss.detach()), rel=1e-5)
    # One optimizer over both networks: both moved.
    assert not all(
        torch.equal(a, b) for a, b in zip(params_of(net_2), params(method, 1), strict=True)
    )


def test_ce_selects_everything_and_warmup_then_selection_for_jumpteaching():
    ce = tiny_method(tiny_config(method={"name": "ce"}))
    counts = train_epoch(ce, tiny_batches(), epoch=0)
    assert counts["num_selected"] == N
    jt = tiny_method(tiny_config(jump={"warmup_epochs": 1}))
    assert jt.in_warmup(0) and not jt.in_warmup(1)
    assert train_epoch(jt, tiny_batches(), epoch=0)["num_selected"] == N
    jt.end_epoch(0)
    flagged = int(jt.flags.current().sum())
    assert train_epoch(jt, tiny_batches(), epoch=1)["num_selected"] == flagged


@pytest.mark.parametrize("name", ["jumpteaching", "ce", "coteaching", "jocor"])
def test_state_dict_round_trip_continues_identically(name):
    cfg = tiny_config(method={"name": name, **(TWO_NET if name in ("coteaching", "jocor") else {})})
    a = tiny_method(cfg)
    for epoch in range(2):
        a.begin_epoch(epoch)
        train_epoch(a, tiny_batches(), epoch=epoch)
        a.end_epoch(epoch)
    state = copy.deepcopy(a.state_dict())
    torch.manual_seed(123)  # a fresh method starts from other weights
    b = tiny_method(cfg.model_copy(update={"seed": 5}))
    b.load_state_dict(state)
    if name == "jumpteaching":
        assert torch.equal(b.flags.current(), a.flags.current())
        assert torch.equal(b.flags.visits(), a.flags.visits())
    for method in (a, b):
        method.begin_epoch(2)
        train_epoch(method, tiny_batches(), epoch=2)
        method.end_epoch(2)
    for i in range(len(a.nets)):
        for pa, pb in zip(params(a, i), params(b, i), strict=True):
            torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    if name == "jumpteaching":
        assert torch.equal(a.flags.current(), b.flags.current())


def test_unknown_method_lists_the_choices():
    cfg = tiny_config()
    object.__setattr__(cfg.method, "name", "mixup")
    with pytest.raises(ValueError, match="ce.*coteaching.*jocor.*jumpteaching"):
        build_method(cfg, num_classes=C, num_samples=N, in_channels=1)


def params_of(net) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def test_class_floor_tops_up_starved_classes_at_commit_and_the_next_visit_uses_it():
    # Same seed and data: epoch 0 (warm-up) runs identically; only the commit differs.
    off = tiny_method(tiny_config(selection={"class_floor": 0.0}))
    on = tiny_method(tiny_config(selection={"class_floor": 1.0}))
    for m in (off, on):
        train_epoch(m, tiny_batches(), epoch=0)
    m_off, m_on = off.end_epoch(0), on.end_epoch(0)
    ref, got = off.flags.current(), on.flags.current()
    assert bool((got | ref).eq(got).all()), "the guard only adds flags"
    _, given, _, _ = tiny_data()  # given labels in idx order
    overall = float(ref.float().mean())
    for c in range(C):
        members = given == c
        assert int(got[members].sum()) >= int(overall * int(members.sum())), c
    assert "class_floor_added_fraction" not in m_off
    assert m_on["class_floor_added_fraction"] > 0, "this data has a starved class (2 of 12 added)"
    assert m_on["class_floor_added_fraction"] == pytest.approx(float((got & ~ref).float().mean()))
    # The next visit is gated by the topped-up flags.
    assert train_epoch(on, tiny_batches(), epoch=1)["num_selected"] == int(got.sum())
