"""The per-epoch progress line, shared by the plain loop and the Ray driver's progress thread.

Torch-free on purpose: Ray Train's controller process imports the progress callback
(:mod:`jumpray.train.progress`), and importing torch there cost it about 3 s of start-up
per run.
"""

from __future__ import annotations

__all__ = ["format_epoch_line"]


def format_epoch_line(epoch: int, epochs: int, m: dict[str, float], eta_s: float) -> str:
    """One progress line a person can follow: the key metrics and an ETA."""
    parts = [
        f"epoch {epoch + 1}/{epochs}",
        f"loss {m['loss']:.3f}",
        f"sel {m['selected_fraction']:.2f}",
    ]
    if "precision" in m:
        parts += [f"prec {m['precision']:.3f}", f"rec {m['recall']:.3f}"]
    if "test_accuracy" in m:
        parts.append(f"test acc {m['test_accuracy']:.4f}")
    parts += [
        f"{m['samples_per_s']:.0f} samples/s",
        f"{m['epoch_time_s']:.1f}s",
        f"ETA {eta_s:.0f}s",
    ]
    return " | ".join(parts)
