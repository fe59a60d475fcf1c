"""The per-batch scorer: prior snapshots of the network look at every sample.

:class:`Scorer` is a callable class with no Ray in it: it builds the two-head network once per
snapshot, and each call turns a numpy batch of rows (:mod:`jumpray.data.schema`: ``image`` uint8
(B, C, H, W), ``given_label``, ...) into per-sample scores. Ray Data runs it as an actor pool
(:mod:`jumpray.score.pipeline`); the plain loop of ``benchmarks/score_scale.py`` and the unit tests
call it directly.

Per snapshot r and sample b (docs/method.md, 'Scoring'; the evaluation forward, dropout off):

- ``prob_given[r, b]``: the classifier's softmax(logits / T) at the given label (T as in
  training, ``selection.temperature``, so the probabilities are the ones the CE loss fitted);
  ``margin``: that probability minus the largest other class's, in [-1, 1];
- ``bit_loss_mean`` / ``bit_loss_var``: mean and unbiased variance of the K per-bit losses
  against the given label's codeword;
- ``semantic_prob``: the semantic head's posterior of the given class, softmax over classes c of
  ``-sum_k bit_loss(h, code_c)_k``. With ±1 codes each bit loss is ``-log((1 + c_k h_k) / 2)``, so
  this is the normalised likelihood of code c under independent bits with P(bit = +1) = (1+h)/2;
- ``clean``: the training clean rule (argmax agrees OR var < tau; ``selection.rule``).

:func:`jumpray.score.decide.label_score` combines the R snapshots into ``label_score``; the
columns added to the batch are listed in :data:`SCORE_COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jumpray.core import bit_loss_stats, bit_losses, clean_rule, make_codebook
from jumpray.data.augment import make_augmenter
from jumpray.models import build_model
from jumpray.score import confident
from jumpray.score.decide import Decision, given_margin, label_score

__all__ = ["Scorer", "ScorerSpec", "SnapshotScores", "SCORE_COLUMNS", "PASS_COLUMNS"]

# Row columns passed through to the output (the image is dropped: it is not needed downstream).
PASS_COLUMNS = ("key", "shard", "idx", "given_label", "clean_label")
# Columns the scorer adds, in output order.
SCORE_COLUMNS = (
    "predicted_label",
    "label_score",
    "is_label_issue",
    "prob_given",
    "pred_prob",
    "margin",
    "bit_loss_mean",
    "bit_loss_var",
    "semantic_prob",
    "votes",
    "top_labels",
    "top_probs",
)


@dataclass(frozen=True)
class ScorerSpec:
    """Everything a scorer needs besides the weights; plain data, so Ray can ship it.

    Attributes:
        model_args: :func:`jumpray.models.build_model` keyword arguments (a checkpoint's
            ``model_args``); ``num_bits`` 0 means no semantic head.
        image_size: S of the test view (centre crop; smaller images are upsampled).
        channels: C of the network input.
        mean, std: per-channel normalisation (0..1 scale), as in training.
        temperature: T of the classifier.
        rule, tau, max_mean_bit_loss: the clean rule (``selection.*``).
        code_clamp: the semantic output clamp.
        decision: how snapshots become ``label_score`` / ``is_label_issue``.
        top_k: how many of the most probable classes each row keeps (``score.top_k``; all C
            when C <= top_k), for the confident-learning decision.
    """

    model_args: dict[str, Any]
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    temperature: float = 1.0  # selection.temperature's default
    rule: str = "reference"
    tau: float = 1e-3
    max_mean_bit_loss: float = 0.5
    code_clamp: float = 1e-4
    decision: Decision = field(default_factory=Decision)
    top_k: int = 10


@dataclass
class SnapshotScores:
    """Raw scores of one batch under R snapshots.

    Attributes:
        probs: (R, B, C) float32 classifier probabilities softmax(logits / T).
        per_snapshot: name -> (R, B) float64: ``prob_given``, ``margin`` (p(given) minus the
            largest other probability), ``semantic_prob``, ``bit_loss_mean``, ``bit_loss_var``
            (these three NaN without a semantic head) and ``clean`` (0.0 / 1.0).
    """

    probs: np.ndarray
    per_snapshot: dict[str, np.ndarray]


class Scorer:
    """Scores batches of rows with R snapshots of one network (see the module docstring).

    Args:
        weights: R state dicts of the evaluation network (oldest first), CPU tensors.
        spec: a :class:`ScorerSpec`.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        num_threads: torch intra-op threads; None leaves torch's setting.

    Raises:
        ValueError: no weights, or a decision that needs a semantic head the network lacks.
    """

    def __init__(
        self,
        weights: Sequence[Mapping[str, Tensor]],
        spec: ScorerSpec,
        *,
        device: str = "auto",
        num_threads: int | None = None,
    ):
        if not weights:
            raise ValueError("Scorer needs at least one snapshot's weights")
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.spec = spec
        num_bits = int(spec.model_args.get("num_bits", 0))
        spec.decision.check(has_semantic=num_bits > 0)
        self.nets = [self._load(w) for w in weights]
        self.codebook = (
            make_codebook(int(spec.model_args["num_classes"]), num_bits).to(self.device)
            if num_bits
            else None
        )
        self.augmenter = make_augmenter(
            image_size=spec.image_size,
            channels=spec.channels,
            mean=list(spec.mean),
            std=list(spec.std),
            recipe="none",
        )

    @property
    def num_snapshots(self) -> int:
        """R."""
        return len(self.nets)

    def _load(self, weights: Mapping[str, Tensor]) -> torch.nn.Module:
        net = build_model(**self.spec.model_args)
        net.load_state_dict(dict(weights))
        return net.to(self.device).eval()

    @torch.inference_mode()
    def score_snapshots(
        self, images: np.ndarray | Tensor, given_label: np.ndarray
    ) -> SnapshotScores:
        """Run every snapshot on a batch.

        Args:
            images: uint8 (B, C, H, W).
            given_label: (B,) int labels.

        Returns:
            :class:`SnapshotScores`.
        """
        x = self.augmenter.test(images).to(self.device)
        given = torch.tensor(np.asarray(given_label, dtype=np.int64), device=self.device)  # a copy
        rows = torch.arange(given.shape[0], device=self.device)
        probs, out = [], {k: [] for k in _SNAPSHOT_KEYS}
        for net in self.nets:
            logits, codes = net(x)
            logits = logits.float()
            p = torch.softmax(logits / self.spec.temperature, dim=1)
            probs.append(p)
            out["prob_given"].append(p[rows, given])
            other = p.clone()
            other[rows, given] = -1.0
            out["margin"].append(p[rows, given] - other.max(dim=1).values)
            bl = None
            if codes is not None and self.codebook is not None:
                bl = bit_losses(codes, self.codebook[given], clamp=self.spec.code_clamp)
            for k, v in self._semantic(codes, bl, given, rows).items():
                out[k].append(v)
            out["clean"].append(self._clean(logits, given, bl).float())
        return SnapshotScores(
            probs=torch.stack(probs).cpu().numpy(),
            per_snapshot={k: torch.stack(v).double().cpu().numpy() for k, v in out.items()},
        )

    def _semantic(
        self, codes: Tensor | None, bl: Tensor | None, given: Tensor, rows: Tensor
    ) -> dict[str, Tensor]:
        """bit_loss_mean, bit_loss_var, semantic_prob: (B,) each, NaN without a semantic head."""
        if codes is None or bl is None or self.codebook is None:
            nan = torch.full((given.shape[0],), float("nan"), device=given.device)
            return {"bit_loss_mean": nan, "bit_loss_var": nan, "semantic_prob": nan}
        mean, var = bit_loss_stats(bl)
        h = codes.float().clamp(-1.0 + self.spec.code_clamp, 1.0 - self.spec.code_clamp)
        posterior = torch.softmax(_code_log_likelihood(h, self.codebook), dim=1)[rows, given]
        return {"bit_loss_mean": mean, "bit_loss_var": var, "semantic_prob": posterior}

    def _clean(self, logits: Tensor, given: Tensor, bl: Tensor | None) -> Tensor:
        """(B,) bool: the clean rule; without a semantic head only the argmax test."""
        if bl is None:
            return (logits / self.spec.temperature).argmax(dim=1) == given
        return clean_rule(
            logits,
            given,
            bl,
            rule=self.spec.rule,
            tau=self.spec.tau,
            temperature=self.spec.temperature,
            max_mean_bit_loss=self.spec.max_mean_bit_loss,
        )

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score one batch of rows.

        Args:
            batch: numpy columns, at least ``image`` uint8 (B, C, H, W) and ``given_label``.

        Returns:
            The batch's :data:`PASS_COLUMNS` that are present, then :data:`SCORE_COLUMNS`:
            ``predicted_label`` (B,) int64, argmax of the snapshot-mean probabilities;
            ``label_score`` (B,) float64 in [0, 1]; ``is_label_issue`` (B,) bool; ``prob_given``,
            ``pred_prob`` (the mean probability of ``predicted_label``), ``margin``
            (mean p(given) - max mean p(other), in [-1, 1]), ``bit_loss_mean``, ``bit_loss_var``,
            ``semantic_prob``: (B,) float64 means over the snapshots; ``votes`` (B,) int64, how
            many snapshots' clean rule calls the sample clean; ``top_labels`` (B, k) int64 and
            ``top_probs`` (B, k) float32, the k = min(``top_k``, C) most probable classes of the
            snapshot-mean probabilities, most probable first.
        """
        given = np.asarray(batch["given_label"], dtype=np.int64)
        out = {k: np.asarray(batch[k]) for k in PASS_COLUMNS if k in batch}
        if given.shape[0] == 0:
            c = int(self.spec.model_args["num_classes"])
            return out | _empty_scores(min(self.spec.top_k, c))
        scores = self.score_snapshots(batch["image"], given)
        out |= summarize(scores, given, decision=self.spec.decision, top_k=self.spec.top_k)
        return out


_SNAPSHOT_KEYS = (
    "prob_given",
    "margin",
    "bit_loss_mean",
    "bit_loss_var",
    "semantic_prob",
    "clean",
)


def _code_log_likelihood(h: Tensor, codebook: Tensor) -> Tensor:
    """(B, C) log P(code c | h) = sum_k log((1 + c_k h_k) / 2) for clamped h (B, K) and codes (C, K)."""
    # log((1 + c h) / 2) for c = +1 and c = -1, then pick per code bit: (B, K) each.
    plus = torch.log1p(h) - np.log(2.0)
    minus = torch.log1p(-h) - np.log(2.0)
    pos = (codebook > 0).to(h.dtype)  # (C, K)
    return plus @ pos.T + minus @ (1.0 - pos).T


def summarize(
    scores: SnapshotScores, given_label: np.ndarray, *, decision: Decision, top_k: int = 10
) -> dict[str, np.ndarray]:
    """Reduce the R snapshots to the per-sample output columns (see :meth:`Scorer.__call__`)."""
    given = np.asarray(given_label, dtype=np.int64)
    b = given.shape[0]
    mean_probs = scores.probs.astype(np.float64).mean(axis=0)  # (B, C)
    predicted = mean_probs.argmax(axis=1)
    p_given = mean_probs[np.arange(b), given]
    ps = scores.per_snapshot
    score = label_score(ps, formula=decision.formula, combine=decision.combine)
    labels, probs = confident.top_k(mean_probs, top_k)
    return {
        "predicted_label": predicted.astype(np.int64),
        "label_score": score,
        "is_label_issue": score < decision.threshold,
        "prob_given": p_given,
        "pred_prob": mean_probs[np.arange(b), predicted],
        "margin": given_margin(mean_probs, given),
        "bit_loss_mean": ps["bit_loss_mean"].mean(axis=0),
        "bit_loss_var": ps["bit_loss_var"].mean(axis=0),
        "semantic_prob": ps["semantic_prob"].mean(axis=0),
        "votes": ps["clean"].sum(axis=0).round().astype(np.int64),
        "top_labels": labels,
        "top_probs": probs.astype(np.float32),
    }


def _empty_scores(k: int) -> dict[str, np.ndarray]:
    f = np.zeros(0, np.float64)
    return {
        "predicted_label": np.zeros(0, np.int64),
        "label_score": f,
        "is_label_issue": np.zeros(0, bool),
        "prob_given": f,
        "pred_prob": f,
        "margin": f,
        "bit_loss_mean": f,
        "bit_loss_var": f,
        "semantic_prob": f,
        "votes": np.zeros(0, np.int64),
        "top_labels": np.zeros((0, k), np.int64),
        "top_probs": np.zeros((0, k), np.float32),
    }
