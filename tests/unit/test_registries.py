"""Every config choice list (a pydantic ``Literal``) names exactly the entries of the registry it
selects from: a name added to one and not the other fails here, not in a user's run."""

from __future__ import annotations

import typing

import pytest

from jumpray import config
from jumpray.core.selection import SELECTION_RULES
from jumpray.data.augment import RECIPES
from jumpray.models.backbones import BACKBONES
from jumpray.score.confident import FILTERS, RANKINGS
from jumpray.score.decide import COMBINERS, SCORE_FORMULAS
from jumpray.score.rules import DECISION_RULES
from jumpray.score.sources import SOURCES
from jumpray.train.methods import METHODS
from jumpray.tune.search import SEARCHERS


def _choices(model: type, field: str) -> set:
    annotation = model.model_fields[field].annotation
    if typing.get_origin(annotation) is not typing.Literal:  # Literal[...] | None
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return set(typing.get_args(annotation))


@pytest.mark.parametrize(
    ("model", "field", "registry"),
    [
        (config.MethodConfig, "name", METHODS),
        (config.SelectionConfig, "rule", SELECTION_RULES),
        (config.DataConfig, "augment", RECIPES),
        (config.ScoreConfig, "decision", DECISION_RULES),
        (config.ScoreConfig, "filter_by", FILTERS),
        (config.ScoreConfig, "rank_by", RANKINGS),
        (config.ScoreConfig, "source", SOURCES),
        (config.ScoreConfig, "formula", SCORE_FORMULAS),
        (config.ScoreConfig, "combine", COMBINERS),
        (config.TuneConfig, "searcher", SEARCHERS),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_config_choice_list_equals_its_registry(model, field, registry):
    assert _choices(model, field) == set(registry)


def test_the_default_backbone_is_registered():
    assert config.ModelConfig().backbone in BACKBONES
