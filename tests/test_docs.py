"""The settings reference in docs/configuration.md is what docs/generate.py renders from the settings
classes: never edited by hand, never stale (run `./build.sh docs` after changing a setting), and every
setting carries the description it is documented by."""
from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from tests.support.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


GENERATOR = load_script("docs/generate.py")


def settings_classes() -> list[type]:
    from delinkcious.catalogue import SERVICES

    return [*GENERATOR.shared_settings_classes(), *(facts.definition().settings_class for facts in SERVICES)]


def test_settings_reference_is_up_to_date():
    committed = GENERATOR.DOCUMENT.read_text(encoding="utf-8")
    fresh = GENERATOR.render_document(committed)
    difference = "".join(difflib.unified_diff(committed.splitlines(keepends=True), fresh.splitlines(keepends=True),
                                              "docs/configuration.md", "rendered", n=0))
    assert fresh == committed, f"the settings reference is stale, run ./build.sh docs:\n{difference[:4000]}"


def test_the_generated_section_is_marked_once():
    committed = GENERATOR.DOCUMENT.read_text(encoding="utf-8")
    assert committed.count(GENERATOR.BEGIN) == 1 and committed.count(GENERATOR.END) == 1


@pytest.mark.parametrize("settings_class", settings_classes(), ids=lambda cls: cls.__name__)
def test_every_setting_has_a_description(settings_class):
    undescribed = [GENERATOR.variable(name) for name, field in settings_class.model_fields.items()
                   if not (field.description or "").strip()]
    assert not undescribed, f"{settings_class.__name__}: give these fields a description: {undescribed}"
