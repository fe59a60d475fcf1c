"""jumpray.core: the pure Jump-teaching method (torch + numpy only; no Ray, MLflow or I/O).

The method is described in docs/method.md.

- codebook: Hadamard codewords of the semantic head
- losses: per-bit BCE, scaled CE, the warm-up and selection-phase losses
- selection: the clean rules and the weak/strong view blend
- flags: the per-sample flag table with J generations, the "jump"
- history: per-sample clean-flag counts and running probabilities from the training forward
- noise: seeded synthetic label noise
- metrics: accuracy, selection and detection precision/recall
- baselines: Co-teaching and JoCoR maths
"""

from jumpray.core.baselines import (
    coteaching_masks,
    forget_rate_schedule,
    jocor_loss,
    jocor_per_sample_loss,
    small_loss_mask,
)
from jumpray.core.codebook import decode_codes, hadamard, make_codebook, min_num_bits
from jumpray.core.flags import JumpFlags
from jumpray.core.history import SampleHistory, merge_top_k
from jumpray.core.losses import (
    bit_losses,
    jump_loss,
    scaled_cross_entropy,
    semantic_loss,
    warmup_loss,
)
from jumpray.core.metrics import accuracy, detection_metrics, selection_metrics
from jumpray.core.noise import (
    ASYM_MAPS,
    NOISE_SPEC_FORMS,
    NOISE_TYPES,
    NoiseResult,
    make_noisy_labels,
    noise_transition_matrix,
    parse_noise_spec,
)
from jumpray.core.selection import (
    SELECTION_RULES,
    bit_loss_stats,
    blend_views,
    class_floor_fill,
    clean_rule,
    draw_blend_lambda,
)

__all__ = [
    # codebook
    "hadamard",
    "make_codebook",
    "min_num_bits",
    "decode_codes",
    # losses
    "bit_losses",
    "semantic_loss",
    "scaled_cross_entropy",
    "jump_loss",
    "warmup_loss",
    # selection
    "bit_loss_stats",
    "SELECTION_RULES",
    "clean_rule",
    "draw_blend_lambda",
    "blend_views",
    "class_floor_fill",
    # flags
    "JumpFlags",
    # history
    "SampleHistory",
    "merge_top_k",
    # noise
    "NoiseResult",
    "NOISE_TYPES",
    "ASYM_MAPS",
    "NOISE_SPEC_FORMS",
    "parse_noise_spec",
    "make_noisy_labels",
    "noise_transition_matrix",
    # metrics
    "accuracy",
    "selection_metrics",
    "detection_metrics",
    # baselines
    "forget_rate_schedule",
    "small_loss_mask",
    "coteaching_masks",
    "jocor_per_sample_loss",
    "jocor_loss",
]
