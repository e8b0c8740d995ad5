"""The moderation policy (a versioned YAML file) and the decision it makes. Pure, except `load_policy`.

A rule maps a taxonomy name (level 1, 2 or 3) to allow / review / reject:
- observed at `confidence` or above -> the rule's action;
- at `review_from` or above but below `confidence` -> review (low confidence: a human decides);
- below both -> ignored.
The most specific rule on a label's ancestry wins (a "Weapons" rule over "Violence"), and a parent
reported with a child is judged through the child. The
decision is the strictest outcome: any reject -> REJECTED, else any review -> NEEDS_REVIEW.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from processors.moderation.taxonomy import APPARENT_AGE, PARENT, Label, ancestry

Action = Literal["allow", "review", "reject"]
ACTIONS: tuple[Action, ...] = ("allow", "review", "reject")
OUTCOME: dict[Action, str] = {"allow": "APPROVED", "review": "NEEDS_REVIEW", "reject": "REJECTED"}
_RANK = {action: rank for rank, action in enumerate(ACTIONS)}


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Rule:
    label: str
    action: Action
    confidence: float
    review_from: float | None = None


@dataclass(frozen=True)
class PosterRule:
    unsafe: frozenset[str]
    max_confidence: float


@dataclass(frozen=True)
class Policy:
    version: str
    min_confidence: float
    default: Action
    rules: Mapping[str, Rule]
    apparent_minor: Action
    unchecked_default: Action
    unchecked: Mapping[str, Action]
    poster: PosterRule

    def rule_for(self, name: str, parent: str | None = None) -> Rule | None:
        return next((self.rules[n] for n in ancestry(name, parent) if n in self.rules), None)


@dataclass(frozen=True)
class Evidence:
    """What a backend saw in a video's sampled frames."""

    labels: Sequence[Label]  # per name, the highest confidence over all frames
    frames_checked: int
    face_age_lows: Sequence[int] | None  # AgeRange.Low of every face; None: the backend estimates no age
    not_checked: Sequence[str] = ()


@dataclass(frozen=True)
class Decision:
    decision: str  # APPROVED | REJECTED | NEEDS_REVIEW (the ModerationDecision symbols)
    reasons: tuple[str, ...]
    not_checked: tuple[str, ...]
    apparent_minor: bool = False
    matched: tuple[str, ...] = field(default=())  # labels that led to a non-allow action


def _action(value: Any, where: str) -> Action:
    if value not in ACTIONS:
        raise PolicyError(f"{where}: {value!r} is not one of {', '.join(ACTIONS)}")
    return value  # type: ignore[no-any-return]


def _percent(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise PolicyError(f"{where}: {value!r} is not a confidence between 0 and 100")
    return float(value)


def parse_policy(raw: Any) -> Policy:
    """A policy from its parsed YAML/JSON form; PolicyError names the first bad field."""
    if not isinstance(raw, dict):
        raise PolicyError("the policy must be a mapping")
    if not isinstance(raw.get("version"), str | int) or not str(raw.get("version")):
        raise PolicyError("version: a policy needs a version (recorded in every decision)")
    floor = _percent(raw.get("min_confidence", 50), "min_confidence")
    rules: dict[str, Rule] = {}
    for i, entry in enumerate(raw.get("rules") or []):
        where = f"rules[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("label"), str):
            raise PolicyError(f"{where}.label: a rule needs a taxonomy label")
        if entry["label"] not in PARENT:
            raise PolicyError(f"{where}.label: {entry['label']!r} is not in the moderation taxonomy")
        if entry["label"] in rules:
            raise PolicyError(f"{where}.label: {entry['label']!r} has two rules")
        review_from = entry.get("review_from")
        rules[entry["label"]] = Rule(
            entry["label"], _action(entry.get("action"), f"{where}.action"),
            _percent(entry.get("confidence", floor), f"{where}.confidence"),
            None if review_from is None else _percent(review_from, f"{where}.review_from"))
    unchecked = raw.get("unchecked") or {}
    poster = raw.get("poster") or {}
    return Policy(
        version=str(raw["version"]), min_confidence=floor,
        default=_action(raw.get("default", "review"), "default"), rules=rules,
        apparent_minor=_action(raw.get("apparent_minor", "review"), "apparent_minor"),
        unchecked_default=_action(unchecked.get("default", "allow"), "unchecked.default"),
        unchecked={name: _action(action, f"unchecked.{name}") for name, action in unchecked.items()
                   if name != "default"},
        poster=PosterRule(frozenset(poster.get("unsafe") or ()),
                          _percent(poster.get("max_confidence", 40), "poster.max_confidence")),
    )


def load_policy(path: Path | None = None) -> Policy:
    """The policy file at `path`, or the bundled default (policy/default.yaml)."""
    try:
        text = path.read_text() if path else \
            resources.files("processors.moderation").joinpath("policy/default.yaml").read_text()
        return parse_policy(yaml.safe_load(text))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"cannot read the moderation policy {path or 'default.yaml'}: {exc}") from exc


def _judge(policy: Policy, label: Label) -> tuple[Action, str] | None:
    """What one label calls for, with the reason; None when it is below every threshold."""
    rule = policy.rule_for(label.name, label.parent)
    seen = f"{label.name} {label.confidence:.1f}%"
    if rule is None:
        if label.confidence < policy.min_confidence:
            return None
        return policy.default, f"{seen}: no rule names it -> {policy.default}"
    if label.confidence >= rule.confidence:
        return rule.action, f"{seen} >= {rule.confidence:g} ({rule.label}) -> {rule.action}"
    if rule.action != "allow" and rule.review_from is not None and label.confidence >= rule.review_from:
        return "review", f"{seen} below {rule.confidence:g} but >= {rule.review_from:g} ({rule.label}): " \
                         "low confidence -> review"
    return None


def decide(policy: Policy, evidence: Evidence, minor_age: int = 18) -> Decision:
    """The automated decision for a video's evidence under `policy` (pure)."""
    verdicts: list[tuple[Action, str, str]] = []
    # A parent reported beside a more specific label (Rekognition reports both) is judged through
    # that label: its rule is the more specific one.
    covered = {name for label in evidence.labels for name in ancestry(label.name, label.parent)[1:]}
    for label in evidence.labels:
        if label.name in covered:
            continue
        judged = _judge(policy, label)
        if judged is not None:
            verdicts.append((judged[0], judged[1], label.name))
    minor = evidence.face_age_lows is not None and any(low < minor_age for low in evidence.face_age_lows)
    if minor:
        youngest = min(evidence.face_age_lows or [0])
        verdicts.append((policy.apparent_minor,
                         f"a face's apparent age range starts at {youngest}, below {minor_age} -> "
                         f"{policy.apparent_minor}", APPARENT_AGE))
    for name in evidence.not_checked:
        action = policy.unchecked.get(name, policy.unchecked_default)
        if action != "allow":
            verdicts.append((action, f"{name} not checked by this backend -> {action}", name))
    worst: Action = max((v[0] for v in verdicts), key=_RANK.__getitem__, default="allow")
    if evidence.frames_checked == 0:
        worst = max(worst, "review", key=_RANK.__getitem__)
        verdicts.append(("review", "no frame could be checked -> review", ""))
    concerns = [v for v in verdicts if v[0] != "allow"]
    return Decision(OUTCOME[worst], tuple(v[1] for v in concerns), tuple(evidence.not_checked), minor,
                    tuple(v[2] for v in concerns if v[2]))


def merge_frames(frames: Iterable[Sequence[Label]]) -> list[Label]:
    """Per label name, the observation with the highest confidence over all frames."""
    best: dict[str, Label] = {}
    for labels in frames:
        for label in labels:
            if label.name not in best or best[label.name].confidence < label.confidence:
                best[label.name] = label
    return sorted(best.values(), key=lambda label: (-label.confidence, label.name))


def unsafe_score(policy: Policy, labels: Iterable[Label]) -> float:
    """How far a frame is from safe for work: the top confidence of a label under an unsafe category."""
    return max((label.confidence for label in labels
                if set(ancestry(label.name, label.parent)) & policy.poster.unsafe), default=0.0)


@dataclass(frozen=True)
class PosterChoice:
    index: int  # into the frames given
    blur: bool  # no frame is safe: the least unsafe one, blurred
    reason: str


def choose_poster(policy: Policy, frames: Sequence[Sequence[Label]], poster_index: int) -> PosterChoice:
    """Keep the transcoder's poster when it is safe for work; else the safest sampled frame (the
    earliest among equals); when none is safe, the least unsafe one, blurred."""
    scores = [unsafe_score(policy, labels) for labels in frames]
    limit = policy.poster.max_confidence
    if scores[poster_index] <= limit:
        return PosterChoice(poster_index, False, "the transcoder's poster is safe for work")
    best = min(range(len(scores)), key=lambda i: (scores[i], i))
    if scores[best] <= limit:
        return PosterChoice(best, False, f"the transcoder's poster scored {scores[poster_index]:.1f}% unsafe; "
                                         f"sampled frame {best} is safe for work ({scores[best]:.1f}%)")
    return PosterChoice(best, True, f"no sampled frame is safe for work (best {scores[best]:.1f}% > {limit:g}%): "
                                    f"frame {best}, blurred")
