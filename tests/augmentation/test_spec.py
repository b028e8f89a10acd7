"""The --augment SPEC parser: kinds, options, defaults, and one-line errors for bad specs."""
from __future__ import annotations

import pytest

from transferkit.augmentation import mixup_alpha, parse_spec, text_steps
from transferkit.core.errors import UserError


def test_spec_with_several_steps_and_defaults():
    steps = parse_spec("eda:synonym=0.1,delete=0.2,copies=3+mixup:alpha=0.2")
    assert [s.kind for s in steps] == ["eda", "mixup"]
    eda = steps[0].options
    assert (eda["synonym"], eda["delete"], eda["swap"], eda["copies"], eda["synonyms"]) == (0.1, 0.2, 0.0, 3, "wordnet")
    assert [s.kind for s in text_steps(steps)] == ["eda"] and mixup_alpha(steps) == 0.2
    assert parse_spec("mixup")[0].options == {"alpha": 0.4}
    assert parse_spec("paraphrase")[0].options["model"] == "smollm2-135m"
    assert parse_spec(None) == [] and parse_spec("  ") == [] and mixup_alpha([]) is None


def test_a_plus_inside_a_model_path_is_not_a_separator():
    steps = parse_spec("paraphrase:model=/models/a+b,copies=2+eda:swap=0.1")
    assert steps[0].options["model"] == "/models/a+b" and steps[1].kind == "eda"


@pytest.mark.parametrize("spec, words", [
    ("shuffle:rate=0.1", "unknown augmentation 'shuffle'"),
    ("eda:synonym=1.5", "eda:synonym must be in [0, 1], got 1.5"),
    ("eda:delete=-0.1", "eda:delete must be in [0, 1]"),
    ("eda:synonym=nan", "eda:synonym must be in [0, 1]"),
    ("eda:synonym=abc", "eda:synonym must be a number"),
    ("eda:copies=0,swap=0.1", "eda:copies must be in [1, 32]"),
    ("eda:copies=2.5,swap=0.1", "eda:copies must be an integer"),
    ("eda:copies=2", "sets no operation"),
    ("eda:colour=0.1", "eda has no option 'colour'"),
    ("eda:synonym", "eda:synonym needs a value"),
    ("mixup:alpha=inf", "mixup:alpha must be in"),
    ("eda:swap=0.1+eda:delete=0.1", "names eda twice"),
])
def test_bad_specs_name_the_key(spec, words):
    with pytest.raises(UserError, match="^augment: ") as e:
        parse_spec(spec)
    assert words in str(e.value) and "\n" not in str(e.value)
