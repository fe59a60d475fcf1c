"""Issue 3 on real data: the four methods on a fixed Fashion-MNIST subset with 40 % symmetric noise.

One run of each method (same data, backbone, epochs, batch size and seed), shared by the asserts.
The figures are printed (run with ``-s``) for the closing note and the README.
"""

from __future__ import annotations

import pytest

from jumpray.config import load_config
from jumpray.jobs.local import LOCAL_DEFAULTS, noisy_fashion_mnist, run_config
from jumpray.train.local import summarize_history

pytestmark = pytest.mark.slow

# The schema defaults (tiny_cnn, class floor 1.2, T = 1, no blend) at 12 epochs. Measured
# 2026-11-27 (2 threads): Jump-teaching 0.8033, CE 0.7977, Co-teaching 0.8103, JoCoR 0.7423; with
# cnn28 (issue 3, 2026-11-24) 0.835 against 0.825, at about 2.5x the time.
SETTINGS = {"train": {"epochs": 12, "lr": 0.05}, "jump": {"warmup_epochs": 3}}
LIMIT, TEST_LIMIT, NOISE = 8000, 3000, "sym:0.4"


@pytest.fixture(scope="module")
def results(fashion_mnist_dir):
    import torch

    torch.set_num_threads(2)
    data = noisy_fashion_mnist(limit=LIMIT, noise=NOISE, seed=0, test_limit=TEST_LIMIT)
    assert abs(data.realized_rate - 0.4) < 1e-3
    out = {}
    for name in ("jumpteaching", "ce", "coteaching", "jocor"):
        cfg = load_config(None, {"method": {"name": name}, **SETTINGS}, base=LOCAL_DEFAULTS)
        res = run_config(cfg, data, device="cpu")
        out[name] = summarize_history(res.history) | {"history": res.history}
        if name == "jumpteaching":
            out[name] |= {
                "flags": res.method.flags.current(),
                "given": data.train.given_label,
                "clean": data.train.clean_label,
            }
    print("\nmethod        test_acc  precision  recall  s/epoch")
    for name, r in out.items():
        print(
            f"{name:<13} {r['test_accuracy']:.4f}    {r['precision']:.3f}      {r['recall']:.3f}   {r['mean_epoch_time_s']:.1f}"
        )
    return out


def test_jumpteaching_selects_far_cleaner_samples_than_the_data(results):
    jt = results["jumpteaching"]
    selection_epochs = jt["history"][SETTINGS["jump"]["warmup_epochs"] :]
    # The data is 60 % clean; the samples whose gradient counts must be far cleaner.
    for h in selection_epochs:
        assert h["data_clean_fraction"] == pytest.approx(0.6, abs=1e-3)
        assert h["precision"] >= 0.85, h
    assert jt["recall"] >= 0.8
    assert 0.3 <= jt["selected_fraction"] <= 0.75
    # The class floor kept every class in training: at least 50 % of each class's clean samples
    # flagged at the end (without it, T-shirt, coat and shirt fell to 0 %).
    flags = jt["flags"]
    for c in range(10):
        clean_c = (jt["given"] == c) & (jt["clean"] == c)
        assert flags[clean_c].float().mean() >= 0.5, c


def test_jumpteaching_beats_plain_ce_at_the_same_epochs(results):
    # Measured 2026-11-27 on tiny_cnn: 0.803 against 0.798 (cnn28, 2026-11-24: 0.835 against
    # 0.825; seed 1: 0.840 against 0.826). With only 12
    # epochs CE has not yet memorised much of the noise (clean labels give it 0.867), so the
    # margin is about one point; the selection precision above is the larger effect.
    assert results["jumpteaching"]["test_accuracy"] > results["ce"]["test_accuracy"]
    assert results["jumpteaching"]["test_accuracy"] >= 0.80


def test_two_network_baselines_run_and_report_the_same_metrics(results):
    keys = {
        "test_accuracy",
        "precision",
        "recall",
        "f1",
        "selected_fraction",
        "samples_per_s",
        "mean_epoch_time_s",
    }
    for name in ("coteaching", "jocor"):
        r = results[name]
        assert keys <= set(r), name
        assert r["test_accuracy"] > 0.5, name  # well above chance (0.1)
        # Small-loss selection also filters noise: kept samples are cleaner than the data.
        assert r["precision"] > 0.7, name
    ce = results["ce"]
    assert ce["selected_fraction"] == 1.0 and ce["precision"] == pytest.approx(0.6, abs=1e-3)
