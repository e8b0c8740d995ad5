"""The policy table and the decision: table-driven, on the shipped default policy and on edits of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.moderation.policy import (Evidence, PolicyError, choose_poster, decide, load_policy, merge_frames,
                                          parse_policy)
from processors.moderation.taxonomy import (APPARENT_AGE, NUDENET_COVERAGE, PARENT, Label, not_checked,
                                            with_ancestors)

DEFAULT = load_policy()
EVERYTHING = frozenset(PARENT)


def _evidence(*labels: tuple[str, float], ages: tuple[int, ...] | None = (), frames: int = 10,
              unchecked: tuple[str, ...] = ()) -> Evidence:
    observed = [label for name, confidence in labels for label in with_ancestors(name, confidence)]
    return Evidence(merge_frames([observed]), frames, ages, unchecked)


@pytest.mark.parametrize(("labels", "ages", "expected"), [
    # Explicit adult nudity and sex are this catalog's content.
    ((), (), "APPROVED"),
    ((("Exposed Female Genitalia", 99.0),), (34, 30), "APPROVED"),
    ((("Explicit Sexual Activity", 97.0), ("Sex Toys", 80.0)), (25,), "APPROVED"),
    ((("Female Swimwear or Underwear", 90.0), ("Kissing on the Lips", 88.0)), (), "APPROVED"),
    ((("Alcoholic Beverages", 95.0), ("Middle Finger", 90.0), ("Gambling", 90.0)), (), "APPROVED"),
    # Violence, disturbing content and hate symbols: rejected when sure, reviewed when not.
    ((("Graphic Violence", 91.0),), (), "REJECTED"),
    ((("Blood & Gore", 85.0),), (), "REJECTED"),  # a level-3 label falls under its level-2 rule
    ((("Graphic Violence", 55.0),), (), "NEEDS_REVIEW"),  # low confidence goes to review
    ((("Graphic Violence", 35.0),), (), "APPROVED"),  # below the rule's review floor
    ((("Weapons", 75.0),), (), "NEEDS_REVIEW"),
    ((("Weapons", 65.0),), (), "APPROVED"),  # under the Weapons rule's 70, and Violence's 60 is not for it
    ((("Corpses", 95.0),), (), "REJECTED"),
    ((("Crashes", 50.0),), (), "NEEDS_REVIEW"),
    ((("Nazi Party", 75.0),), (), "REJECTED"),
    ((("Extremist", 35.0),), (), "NEEDS_REVIEW"),
    ((("Pills", 80.0),), (), "NEEDS_REVIEW"),
    # Apparent minors always go to review, whatever else is seen.
    ((("Exposed Female Genitalia", 99.0),), (17, 30), "NEEDS_REVIEW"),
    ((), (12,), "NEEDS_REVIEW"),
    ((), (18,), "APPROVED"),
    # The strictest outcome wins.
    ((("Graphic Violence", 91.0), ("Weapons", 90.0)), (15,), "REJECTED"),
    # A label no rule names is reviewed, once it is above the floor.
    ((("Something New", 70.0),), (), "NEEDS_REVIEW"),
    ((("Something New", 45.0),), (), "APPROVED"),
])
def test_the_default_policy(labels: tuple[tuple[str, float], ...], ages: tuple[int, ...], expected: str) -> None:
    assert decide(DEFAULT, _evidence(*labels, ages=ages)).decision == expected


def test_reasons_name_the_label_the_confidence_and_the_rule() -> None:
    decision = decide(DEFAULT, _evidence(("Blood & Gore", 85.0), ages=(16,)))
    assert decision.decision == "REJECTED" and decision.apparent_minor
    assert any("Blood & Gore 85.0% >= 80 (Graphic Violence) -> reject" in reason for reason in decision.reasons)
    assert any("starts at 16, below 18" in reason for reason in decision.reasons)
    assert "Blood & Gore" in decision.matched and APPARENT_AGE in decision.matched
    assert decide(DEFAULT, _evidence()).reasons == ()


def test_the_minor_age_threshold_is_a_parameter() -> None:
    assert decide(DEFAULT, _evidence(ages=(19,)), minor_age=21).decision == "NEEDS_REVIEW"
    assert decide(DEFAULT, _evidence(ages=(19,)), minor_age=18).decision == "APPROVED"


def test_categories_the_backend_cannot_see_are_listed_and_routed_as_the_policy_says() -> None:
    blind = tuple(not_checked(NUDENET_COVERAGE, estimates_age=False))
    assert {"Violence", "Visually Disturbing", "Hate Symbols", "Drugs & Tobacco", APPARENT_AGE} <= set(blind)
    assert "Explicit" not in blind and "Swimwear or Underwear" not in blind
    assert "Explicit Sexual Activity" in blind  # NudeNet sees exposed parts, not acts
    # The default routes them to allow (the local backend must be able to publish), and lists them.
    decision = decide(DEFAULT, _evidence(unchecked=blind))
    assert decision.decision == "APPROVED" and decision.not_checked == blind
    strict = parse_policy({"version": "strict", "unchecked": {"default": "review"}})
    assert decide(strict, _evidence(unchecked=blind)).decision == "NEEDS_REVIEW"
    targeted = parse_policy({"version": "t", "unchecked": {"default": "allow", APPARENT_AGE: "review"}})
    decision = decide(targeted, _evidence(unchecked=blind))
    assert decision.decision == "NEEDS_REVIEW" and decision.reasons == (
        "Apparent Age not checked by this backend -> review",)
    assert not_checked(EVERYTHING, estimates_age=True) == []


def test_no_frame_checked_is_never_approved() -> None:
    assert decide(DEFAULT, _evidence(frames=0)).decision == "NEEDS_REVIEW"


@pytest.mark.parametrize(("raw", "field"), [
    ([], "mapping"),
    ({"rules": []}, "version"),
    ({"version": "1", "min_confidence": 120}, "min_confidence"),
    ({"version": "1", "default": "maybe"}, "default"),
    ({"version": "1", "rules": [{"label": "Violence", "action": "ban"}]}, r"rules\[0\].action"),
    ({"version": "1", "rules": [{"label": "Violense", "action": "reject"}]}, r"rules\[0\].label"),
    ({"version": "1", "rules": [{"label": "Violence", "action": "reject", "confidence": "high"}]},
     r"rules\[0\].confidence"),
    ({"version": "1", "rules": [{"label": "Violence", "action": "reject"}] * 2}, "two rules"),
    ({"version": "1", "apparent_minor": "allowed"}, "apparent_minor"),
    ({"version": "1", "unchecked": {"Violence": "ok"}}, "unchecked.Violence"),
])
def test_a_bad_policy_is_refused_naming_the_field(raw: object, field: str) -> None:
    with pytest.raises(PolicyError, match=field):
        parse_policy(raw)


def test_a_policy_file_is_read_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: test-1\nrules:\n  - {label: Explicit, action: reject, confidence: 50}\n")
    policy = load_policy(path)
    assert policy.version == "test-1"
    assert decide(policy, _evidence(("Exposed Female Nipple", 60.0))).decision == "REJECTED"
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("version: [unclosed")
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "bad.yaml")


def _frame(*labels: tuple[str, float]) -> list[Label]:
    return [label for name, confidence in labels for label in with_ancestors(name, confidence)]


@pytest.mark.parametrize(("frames", "index", "blur"), [
    ([_frame(), _frame(("Exposed Female Nipple", 90.0))], 0, False),  # a safe poster is kept
    ([_frame(("Exposed Female Genitalia", 90.0)), _frame(("Exposed Male Genitalia", 60.0)), _frame(),
      _frame()], 2, False),  # the earliest safe frame
    ([_frame(("Exposed Female Genitalia", 90.0)), _frame(("Female Swimwear or Underwear", 95.0))], 1, False),
    ([_frame(("Exposed Female Genitalia", 90.0)), _frame(("Exposed Buttocks or Anus", 70.0))], 1, True),
    ([_frame(("Graphic Violence", 90.0)), _frame(("Weapons", 30.0))], 1, False),
])
def test_the_poster_is_safe_for_work(frames: list[list[Label]], index: int, blur: bool) -> None:
    choice = choose_poster(DEFAULT, frames, 0)
    assert (choice.index, choice.blur) == (index, blur)
    assert choice.reason
