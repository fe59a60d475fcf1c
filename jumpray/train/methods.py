"""The four learning methods behind one small interface, built from the pure core.

- ``jumpteaching``: one two-head network; the clean flag that gates a sample's gradient was written
  J visits earlier by an earlier model state (docs/method.md, 'Jump').
- ``ce``: plain cross-entropy on every sample (the floor every method must beat).
- ``coteaching``: two networks; each picks its small-loss samples and the *other* one learns from
  them; the forget rate ramps up over ``num_gradual`` epochs (Han et al., NeurIPS 2018).
- ``jocor``: two networks trained jointly on the small-loss samples of a joint loss with a
  symmetric-KL co-regularization term (Wei et al., CVPR 2020).

A method owns its networks, optimizers and schedulers and exposes ``train_step`` (one update from a
batch), ``end_epoch`` (flag sync + scheduler), ``eval_model`` and ``state_dict``. It knows nothing
of Ray: the Ray Train worker passes an all-gather function to ``end_epoch`` and an all-reduce to
``global_count``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jumpray.config import RunConfig
from jumpray.core import (
    JumpFlags,
    SampleHistory,
    bit_losses,
    blend_views,
    class_floor_fill,
    clean_rule,
    coteaching_masks,
    draw_blend_lambda,
    forget_rate_schedule,
    jocor_loss,
    jump_loss,
    make_codebook,
    warmup_loss,
)
from jumpray.models import build_model
from jumpray.train.seeds import BLEND_STREAM, epoch_generator

__all__ = [
    "Batch",
    "StepOutput",
    "Method",
    "build_method",
    "METHODS",
    "GatherFn",
    "CountFn",
]

GatherFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
CountFn = Callable[[int], int]


@dataclass
class Batch:
    """One training batch on the device.

    Attributes:
        image: (B, C, H, W) float32, the weak (or only) view, normalised.
        given_label: (B,) int64, the possibly wrong label.
        idx: (B,) int64 global sample ids.
        image_strong: (B, C, H, W) float32 strong view, or None.
        clean_label: (B,) int64 true labels (-1 = unknown), or None.
        dummy: a stand-in step of a rank whose shard ran out while others still train: the same
            forward/backward (so every collective of a real step happens, in the same order) with
            the loss multiplied by 0, no flag records and nothing selected.
    """

    image: Tensor
    given_label: Tensor
    idx: Tensor
    image_strong: Tensor | None = None
    clean_label: Tensor | None = None
    dummy: bool = False


@dataclass
class StepOutput:
    """What one update did: the loss and which samples' gradients counted, (B,) bool."""

    loss: float
    selected: Tensor


def _identity_count(n: int) -> int:
    return n


class _Base:
    """Shared plumbing: optimizers, schedulers, AMP, device placement."""

    name = "base"

    def __init__(self, cfg: RunConfig, nets: list[nn.Module], *, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.nets = [net.to(device) for net in nets]
        if device.type == "cuda" and cfg.train.channels_last:
            self.nets = [net.to(memory_format=torch.channels_last) for net in self.nets]
        self.amp_dtype = _amp_dtype(cfg.train.amp, device)
        # fp16 needs loss scaling; bf16 has fp32's range and does not.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.optimizers = self._build_optimizers()
        self.schedulers = [_build_scheduler(opt, cfg) for opt in self.optimizers]
        self.global_count: CountFn = _identity_count

    def _build_optimizers(self) -> list[torch.optim.Optimizer]:
        return [_build_optimizer(net.parameters(), self.cfg) for net in self.nets]

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _update(
        self, loss: Tensor, optimizer: torch.optim.Optimizer, *, skip: bool = False
    ) -> None:
        optimizer.zero_grad(set_to_none=True)
        # backward always runs (DDP ranks must all join the gradient all-reduce);
        # the step is skipped when no sample was selected anywhere, as the reference skips it.
        self.scaler.scale(loss).backward()
        if skip:
            optimizer.zero_grad(set_to_none=True)
            self.scaler.update()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def _prep(self, x: Tensor) -> Tensor:
        if self.device.type == "cuda" and self.cfg.train.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def train(self) -> None:
        for net in self.nets:
            net.train()

    def begin_epoch(self, epoch: int, *, rank: int = 0) -> None:
        """Called before each epoch; methods with their own randomness reseed it here."""

    def eval_model(self) -> nn.Module:
        """The network whose test accuracy is reported (the first one for two-network methods)."""
        return self.nets[0]

    def end_epoch(self, epoch: int, *, gather: GatherFn | None = None) -> dict[str, float]:
        for sched in self.schedulers:
            if sched is not None:
                sched.step()
        return {"lr": self.optimizers[0].param_groups[0]["lr"]}

    def state_dict(self) -> dict[str, Any]:
        return {
            "nets": [_unwrap(n).state_dict() for n in self.nets],
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() if s is not None else None for s in self.schedulers],
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for net, sd in zip(self.nets, state["nets"], strict=True):
            _unwrap(net).load_state_dict(sd)
        for opt, sd in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(sd)
        for sched, sd in zip(self.schedulers, state["schedulers"], strict=True):
            if sched is not None and sd is not None:
                sched.load_state_dict(sd)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


class JumpTeaching(_Base):
    """Jump-teaching with one two-head network (docs/method.md)."""

    name = "jumpteaching"
    needs_strong_view = True

    def __init__(self, cfg: RunConfig, net: nn.Module, *, num_samples: int, device: torch.device):
        super().__init__(cfg, [net], device=device)
        self.codebook = make_codebook(_unwrap(net).num_classes, _unwrap(net).num_bits).to(device)
        self.flags = JumpFlags(num_samples, cfg.jump.interval, initial=False, device="cpu")
        # Per-sample clean-flag counts and running probabilities, from this same forward.
        self.history = SampleHistory(
            num_samples,
            _unwrap(net).num_classes,
            top_k=cfg.score.top_k,
            from_epoch=cfg.score.history_from_epoch,
            ema=cfg.score.history_ema,
        )
        self.generator = epoch_generator(cfg.seed, epoch=0, stream=BLEND_STREAM)
        # (given_label, p(given)) of each record since the last commit, aligned with the flags'
        # pending records: the class-floor guard tops starved classes up from them.
        self._pending_scores: list[tuple[Tensor, Tensor]] = []

    def begin_epoch(self, epoch: int, *, rank: int = 0) -> None:
        """Reseed the blend draws from (seed, rank, epoch), so a resumed run draws the same."""
        self.generator = epoch_generator(self.cfg.seed, epoch=epoch, rank=rank, stream=BLEND_STREAM)

    def in_warmup(self, epoch: int) -> bool:
        return epoch < self.cfg.jump.warmup_epochs

    def train_step(self, batch: Batch, *, epoch: int) -> StepOutput:
        sel_cfg = self.cfg.selection
        warm = self.in_warmup(epoch)
        x = batch.image
        if not warm and sel_cfg.blend and batch.image_strong is not None:
            lam = draw_blend_lambda(self.generator, sel_cfg.beta_alpha)
            x = blend_views(batch.image, batch.image_strong, lam)
        y = batch.given_label
        with self.autocast():
            logits, codes = self.nets[0](self._prep(x))
        logits, codes = logits.float(), codes.float()
        bits = bit_losses(codes, self.codebook[y], clamp=sel_cfg.code_clamp)
        if warm:
            selected = torch.ones_like(y, dtype=torch.bool)
            loss = warmup_loss(logits, bits, y, temperature=sel_cfg.temperature)
        else:
            # The jump: the gate was written at this sample's visit J epochs ago, by that model state.
            if batch.dummy:
                selected = torch.zeros_like(y, dtype=torch.bool)
            else:
                selected = self.flags.gate(batch.idx.cpu()).to(self.device)
            loss = jump_loss(
                logits,
                codes,
                y,
                self.codebook,
                selected,
                temperature=sel_cfg.temperature,
                clamp=sel_cfg.code_clamp,
            )
        # New flags from this same forward pass (no extra inference), visible only at a later visit.
        new_flags = clean_rule(
            logits.detach(),
            y,
            bits.detach(),
            rule=sel_cfg.rule,
            tau=sel_cfg.tau,
            temperature=sel_cfg.temperature,
            max_mean_bit_loss=sel_cfg.max_mean_bit_loss,
        )
        if batch.dummy:
            loss, selected = loss * 0.0, torch.zeros_like(selected)
        else:
            self.flags.record(batch.idx.cpu(), new_flags.cpu())
            with torch.no_grad():
                probs = torch.softmax(logits.detach() / sel_cfg.temperature, dim=1)
            self.history.record(batch.idx, y, probs, epoch=epoch)
            if sel_cfg.class_floor > 0:
                p_given = probs.gather(1, y[:, None]).squeeze(1).cpu()
                self._pending_scores.append((y.cpu(), p_given))
        nothing = self.global_count(int(selected.sum())) == 0
        self._update(loss, self.optimizers[0], skip=nothing)
        return StepOutput(float(loss.detach()), selected)

    def end_epoch(self, epoch: int, *, gather: GatherFn | None = None) -> dict[str, float]:
        idx, flags = self.flags.pending()
        added = self._apply_class_floor(flags)
        flags = flags | added
        if gather is not None:
            idx, flags = gather(idx, flags)
        self.flags.commit(idx, flags)
        if not self.in_warmup(epoch):
            self.history.count_flags(idx, flags)
        hist_idx, hist_rows = self.history.pending()
        if gather is not None:
            hist_idx, hist_rows = gather(hist_idx, hist_rows)
        self.history.commit(hist_idx, hist_rows)
        out = super().end_epoch(epoch)
        out["flagged_clean_fraction"] = float(self.flags.current().float().mean())
        if self.cfg.selection.class_floor > 0:
            out["class_floor_added_fraction"] = (
                float(added.float().mean()) if added.numel() else 0.0
            )
        return out

    def _apply_class_floor(self, flags: Tensor) -> Tensor:
        """The flags the class-floor guard adds to this rank's records, (M,) bool.

        Each rank tops up its own records before the all-gather, so every rank still commits the
        same gathered flags; with one worker this is the whole epoch.
        """
        scores, self._pending_scores = self._pending_scores, []
        floor = self.cfg.selection.class_floor
        if floor <= 0 or not scores or flags.numel() == 0:
            return torch.zeros_like(flags)
        given = torch.cat([g for g, _ in scores])
        prob = torch.cat([p for _, p in scores])
        filled = class_floor_fill(
            flags, given, prob, num_classes=self.codebook.shape[0], floor=floor
        )
        return filled & ~flags

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["flags"] = self.flags.state_dict()
        state["history"] = self.history.state_dict()
        state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.flags.load_state_dict(state["flags"])
        if "history" in state:  # checkpoints written before the history existed have none
            self.history.load_state_dict(state["history"])
        self.generator.set_state(state["generator"])


class CrossEntropy(_Base):
    """Plain cross-entropy on every sample, one single-head network."""

    name = "ce"
    needs_strong_view = False

    def train_step(self, batch: Batch, *, epoch: int) -> StepOutput:
        with self.autocast():
            logits, _ = self.nets[0](self._prep(batch.image))
        loss = F.cross_entropy(logits.float(), batch.given_label)
        if batch.dummy:
            loss = loss * 0.0
        self._update(loss, self.optimizers[0])
        return StepOutput(float(loss.detach()), _all_or_none(batch))


class _TwoNet(_Base):
    """Co-teaching and JoCoR share the forget-rate schedule and two networks."""

    def __init__(
        self,
        cfg: RunConfig,
        nets: list[nn.Module],
        *,
        noise_rate: float | None,
        device: torch.device,
    ):
        super().__init__(cfg, nets, device=device)
        m = cfg.method
        # The papers assume the noise rate is known and forget exactly that fraction.
        self.forget_rate = (
            m.forget_rate if m.forget_rate is not None else (noise_rate if noise_rate else 0.2)
        )

    def current_forget_rate(self, epoch: int) -> float:
        m = self.cfg.method
        return forget_rate_schedule(
            epoch, forget_rate=self.forget_rate, num_gradual=m.num_gradual, exponent=m.exponent
        )

    def forward_both(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with self.autocast():
            logits_1, _ = self.nets[0](x)
            logits_2, _ = self.nets[1](x)
        return logits_1.float(), logits_2.float()


class CoTeaching(_TwoNet):
    """Co-teaching: each network learns from the other's small-loss samples."""

    name = "coteaching"
    needs_strong_view = False

    def train_step(self, batch: Batch, *, epoch: int) -> StepOutput:
        logits_1, logits_2 = self.forward_both(self._prep(batch.image))
        y = batch.given_label
        loss_1 = F.cross_entropy(logits_1, y, reduction="none")
        loss_2 = F.cross_entropy(logits_2, y, reduction="none")
        mask_1, mask_2 = coteaching_masks(
            loss_1.detach(), loss_2.detach(), self.current_forget_rate(epoch)
        )
        update_1 = loss_1[mask_1].mean()
        update_2 = loss_2[mask_2].mean()
        if batch.dummy:
            update_1, update_2 = update_1 * 0.0, update_2 * 0.0
            mask_2 = torch.zeros_like(mask_2)
        self._update(update_1, self.optimizers[0])
        self._update(update_2, self.optimizers[1])
        # Report network 1's own small-loss pick (what it hands to network 2).
        return StepOutput(float(update_1.detach()), mask_2)


class JoCoR(_TwoNet):
    """JoCoR: joint small-loss selection with co-regularization; one optimizer for both networks."""

    name = "jocor"
    needs_strong_view = False

    def _build_optimizers(self) -> list[torch.optim.Optimizer]:
        params = [p for net in self.nets for p in net.parameters()]
        return [_build_optimizer(params, self.cfg)]

    def train_step(self, batch: Batch, *, epoch: int) -> StepOutput:
        logits_1, logits_2 = self.forward_both(self._prep(batch.image))
        loss, mask = jocor_loss(
            logits_1,
            logits_2,
            batch.given_label,
            co_lambda=self.cfg.method.co_lambda,
            forget_rate=self.current_forget_rate(epoch),
        )
        if batch.dummy:
            loss, mask = loss * 0.0, torch.zeros_like(mask)
        self._update(loss, self.optimizers[0])
        return StepOutput(float(loss.detach()), mask)


METHODS: dict[str, type[_Base]] = {
    "jumpteaching": JumpTeaching,
    "ce": CrossEntropy,
    "coteaching": CoTeaching,
    "jocor": JoCoR,
}

Method = JumpTeaching | CrossEntropy | CoTeaching | JoCoR


def build_method(
    cfg: RunConfig,
    *,
    num_classes: int,
    num_samples: int,
    in_channels: int,
    device: torch.device | str = "cpu",
    noise_rate: float | None = None,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
) -> Method:
    """Build the method named by ``cfg.method.name`` with fresh networks.

    Args:
        cfg: the run configuration.
        num_classes: C.
        num_samples: N, the size of the per-sample flag table (max idx + 1).
        in_channels: 1 (gray) or 3 (RGB).
        device: where the networks live.
        noise_rate: the data's noise rate when known (Co-teaching/JoCoR forget rate default).
        wrap: optional wrapper applied to each network after it is built (Ray's ``prepare_model``).

    Raises:
        ValueError: unknown method name (lists the choices).
    """
    name = cfg.method.name
    if name not in METHODS:
        raise ValueError(f"method.name={name!r} is unknown; choose one of {sorted(METHODS)}")
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    num_bits = cfg.model.semantic_dim if name == "jumpteaching" else 0
    num_nets = 2 if name in ("coteaching", "jocor") else 1

    def make() -> nn.Module:
        net = build_model(
            backbone=cfg.model.backbone,
            num_classes=num_classes,
            num_bits=num_bits,
            in_channels=in_channels,
            semantic_hidden=cfg.model.semantic_hidden,
            dropout=cfg.model.dropout,
            pretrained=cfg.model.pretrained,
        )
        net = net.to(device)
        if device.type == "cuda" and cfg.train.channels_last:
            # Before DDP wraps it: DDP must see the parameters in their final layout.
            net = net.to(memory_format=torch.channels_last)
        return wrap(net) if wrap else net

    nets = [make() for _ in range(num_nets)]
    if name == "jumpteaching":
        method = JumpTeaching(cfg, nets[0], num_samples=num_samples, device=device)
    elif name == "ce":
        method = CrossEntropy(cfg, nets, device=device)
    else:
        method = METHODS[name](cfg, nets, noise_rate=noise_rate, device=device)
    return method


# ---------------------------------------------------------------------------------------------


def _unwrap(net: nn.Module) -> nn.Module:
    return getattr(net, "module", net)


def _all_or_none(batch: Batch) -> Tensor:
    """(B,) bool: every sample counts in a real step, none in a dummy one."""
    return torch.full_like(batch.given_label, not batch.dummy, dtype=torch.bool)


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _build_optimizer(params, cfg: RunConfig) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def _build_scheduler(opt: torch.optim.Optimizer, cfg: RunConfig):
    if cfg.train.scheduler == "none":
        return None
    # Cosine, stepped once per epoch, as the official code (docs/method.md, 'Training losses').
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=cfg.train.epochs, eta_min=cfg.train.eta_min
    )
