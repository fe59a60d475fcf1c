"""The two heads that read the shared backbone feature (docs/method.md, 'Network').

- :class:`ClassifierHead`: Linear(D, C), the class logits.
- :class:`SemanticHead`: the CSQ-style code MLP, Linear(D, h) -> ReLU -> Dropout ->
  Linear(h, h) -> ReLU -> Dropout -> Linear(h, K) -> Tanh, giving K values in (-1, 1) that are
  compared with the class's Hadamard code. The reference uses h = D and dropout 0.5.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ClassifierHead", "SemanticHead"]


class ClassifierHead(nn.Module):
    """Linear classifier: (B, D) float32 features -> (B, C) float32 logits."""

    def __init__(self, d: int, num_classes: int):
        super().__init__()
        if d < 1 or num_classes < 1:
            raise ValueError(f"need d >= 1 and num_classes >= 1, got d={d}, {num_classes=}")
        self.fc = nn.Linear(d, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(features)


class SemanticHead(nn.Module):
    """Code MLP: (B, D) float32 features -> (B, K) float32 codes in (-1, 1).

    Args:
        d: input feature dimension D.
        num_bits: K, the code length.
        hidden: hidden width h; None means h = d (the reference).
        dropout: drop probability after each hidden ReLU (0.5 in the reference).
    """

    def __init__(self, d: int, num_bits: int, hidden: int | None = None, dropout: float = 0.5):
        super().__init__()
        h = d if hidden is None else hidden
        if d < 1 or num_bits < 1 or h < 1:
            raise ValueError(f"need d, num_bits, hidden >= 1, got d={d}, {num_bits=}, hidden={h}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.mlp = nn.Sequential(
            nn.Linear(d, h),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(h, h),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(h, num_bits),
            nn.Tanh(),
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.mlp(features)
