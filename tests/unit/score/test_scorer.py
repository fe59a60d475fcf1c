"""The Scorer on a dict batch, no Ray: hand-computed scores through fixed fake networks, and the
real network checked against an independent forward pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from jumpray.core import make_codebook
from jumpray.data.augment import make_augmenter
from jumpray.errors import ConfigError
from jumpray.models import build_model
from jumpray.score.decide import Decision
from jumpray.score.scorer import SCORE_COLUMNS, Scorer, ScorerSpec, _code_log_likelihood

LN3 = math.log(3.0)


class FixedNet(nn.Module):
    """Returns the same logits and codes whatever the input."""

    def __init__(self, logits, codes):
        super().__init__()
        self.logits = torch.tensor(logits, dtype=torch.float32)
        self.codes = None if codes is None else torch.tensor(codes, dtype=torch.float32)

    def forward(self, x):
        return self.logits[: x.shape[0]], None if self.codes is None else self.codes[: x.shape[0]]


def make_spec(num_bits: int = 2, num_classes: int = 2, **decision) -> ScorerSpec:
    return ScorerSpec(
        model_args={
            "backbone": "cnn28",
            "num_classes": num_classes,
            "num_bits": num_bits,
            "in_channels": 1,
            "dropout": 0.0,
        },
        image_size=8,
        channels=1,
        mean=(0.5,),
        std=(0.25,),
        temperature=2.0,
        tau=1e-3,
        decision=Decision(**decision),
    )


def weights(spec: ScorerSpec, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return build_model(**spec.model_args).state_dict()


def batch(b: int = 2) -> dict:
    rng = np.random.default_rng(0)
    return {
        "key": np.array([f"s{i}" for i in range(b)], dtype=object),
        "shard": np.array(["a.tar"] * b, dtype=object),
        "idx": np.arange(b, dtype=np.int64),
        "given_label": np.array([0, 1] * (b // 2), dtype=np.int64),
        "clean_label": np.array([0, 0] * (b // 2), dtype=np.int64),
        "image": rng.integers(0, 256, (b, 1, 8, 8), dtype=np.uint8),
    }


def test_code_log_likelihood_by_hand():
    h = torch.tensor([[0.5, -0.5]])
    codes = make_codebook(2, 2)  # [[1, 1], [1, -1]]
    ll = _code_log_likelihood(h, codes)
    expected = [[math.log(0.75) + math.log(0.25), 2 * math.log(0.75)]]
    np.testing.assert_allclose(ll.numpy(), expected, rtol=1e-6)


def test_two_fixed_snapshots_by_hand():
    spec = make_spec(formula="blend", combine="mean", threshold=0.5)
    scorer = Scorer([weights(spec), weights(spec, 1)], spec)
    # C = 2, K = 2, codes [[1, 1], [1, -1]], T = 2; given labels [0, 1].
    scorer.nets = [
        FixedNet([[2 * LN3, 0.0], [0.0, 0.0]], [[0.5, -0.5], [0.5, -0.5]]),
        FixedNet([[0.0, 0.0], [0.0, 2 * LN3]], [[-0.5, -0.5], [-0.5, -0.5]]),
    ]
    out = scorer(batch())
    assert list(out) == ["key", "shard", "idx", "given_label", "clean_label", *SCORE_COLUMNS]
    # softmax(logits / 2): snapshot 1 -> [.75, .25], [.5, .5]; snapshot 2 -> [.5, .5], [.25, .75]
    np.testing.assert_allclose(out["prob_given"], [0.625, 0.625], rtol=1e-6)
    np.testing.assert_array_equal(out["predicted_label"], [0, 1])
    np.testing.assert_allclose(out["pred_prob"], [0.625, 0.625], rtol=1e-6)
    np.testing.assert_allclose(out["margin"], [0.25, 0.25], rtol=1e-6)
    # per-snapshot margins: s0 .5 and 0, s1 0 and .5
    s = scorer.score_snapshots(batch()["image"], batch()["given_label"])
    np.testing.assert_allclose(s.per_snapshot["margin"], [[0.5, 0.0], [0.0, 0.5]], atol=1e-6)
    # semantic posterior of the given class: 0.25 and 0.75 in both snapshots
    np.testing.assert_allclose(out["semantic_prob"], [0.25, 0.75], rtol=1e-6)
    # bit losses: s0/snap1 = -log .75, -log .25; s0/snap2 = -log .25 twice;
    # s1/snap1 = -log .75 twice; s1/snap2 = -log .25, -log .75
    l75, l25 = -math.log(0.75), -math.log(0.25)
    np.testing.assert_allclose(
        out["bit_loss_mean"], [((l75 + l25) / 2 + l25) / 2, (l75 + (l25 + l75) / 2) / 2], rtol=1e-5
    )
    np.testing.assert_allclose(
        out["bit_loss_var"], [(l25 - l75) ** 2 / 2 / 2, (l25 - l75) ** 2 / 2 / 2], rtol=1e-5
    )
    # clean rule: every (sample, snapshot) passes: by argmax or by var = 0 < tau
    np.testing.assert_array_equal(out["votes"], [2, 2])
    # blend per snapshot: s0: (.75+.25)/2=.5, (.5+.25)/2=.375 -> .4375; s1: .625, .75 -> .6875
    np.testing.assert_allclose(out["label_score"], [0.4375, 0.6875], rtol=1e-6)
    np.testing.assert_array_equal(out["is_label_issue"], [True, False])


def test_vote_and_prob_on_the_same_snapshots():
    spec = make_spec(formula="prob", combine="vote", threshold=0.5)
    scorer = Scorer([weights(spec)], spec)
    scorer.nets = [
        FixedNet([[2 * LN3, 0.0], [0.0, 0.0]], [[0.5, -0.5], [0.5, -0.5]]),
        FixedNet([[0.0, 0.0], [0.0, -2 * LN3]], [[-0.5, -0.5], [-0.5, -0.5]]),
    ]
    out = scorer(batch())
    # p(given): s0 .75, .5 -> 2 votes of 2; s1 .5, .25 -> 1 of 2
    np.testing.assert_allclose(out["label_score"], [1.0, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(out["is_label_issue"], [False, False])


def test_real_network_matches_an_independent_forward():
    spec = make_spec(num_bits=4, num_classes=4, formula="prob")
    w0, w1 = weights(spec, 0), weights(spec, 1)
    scorer = Scorer([w0, w1], spec, device="cpu")
    rows = batch(6)
    out = scorer(rows)
    view = make_augmenter(image_size=8, channels=1, mean=[0.5], std=[0.25], recipe="none")
    x = (torch.tensor(rows["image"]).float() / 255.0 - 0.5) / 0.25
    torch.testing.assert_close(view.test(rows["image"]), x)
    probs = []
    for w in (w0, w1):
        net = build_model(**spec.model_args)
        net.load_state_dict(w)
        net.eval()
        with torch.no_grad():
            probs.append(torch.softmax(net(x)[0] / 2.0, dim=1).double().numpy())
    mean = (probs[0] + probs[1]) / 2
    given = rows["given_label"]
    np.testing.assert_allclose(out["prob_given"], mean[np.arange(6), given], rtol=1e-5)
    np.testing.assert_array_equal(out["predicted_label"], mean.argmax(1))
    np.testing.assert_allclose(out["label_score"], out["prob_given"], rtol=1e-6)
    assert out["votes"].min() >= 0 and out["votes"].max() <= 2


def test_no_semantic_head():
    spec = make_spec(num_bits=0, formula="blend")
    with pytest.raises(ConfigError, match="semantic head"):
        Scorer([weights(spec)], spec)
    spec = make_spec(num_bits=0, formula="prob")
    out = Scorer([weights(spec)], spec)(batch())
    assert np.isnan(out["bit_loss_mean"]).all() and np.isnan(out["semantic_prob"]).all()
    np.testing.assert_array_equal(out["votes"], out["predicted_label"] == [0, 1])


def test_empty_batch_and_no_weights():
    spec = make_spec()
    rows = {k: v[:0] for k, v in batch().items()}
    out = Scorer([weights(spec)], spec)(rows)
    assert all(len(out[c]) == 0 for c in SCORE_COLUMNS)
    with pytest.raises(ValueError, match="at least one"):
        Scorer([], spec)
