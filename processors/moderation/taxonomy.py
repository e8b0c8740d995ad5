"""The one moderation vocabulary: Rekognition's model-7 taxonomy, and NudeNet's classes mapped onto it.

Both backends report labels in these names (with their parent and level), so one policy file serves
both. Confidences are percentages (0-100) like Rekognition's; NudeNet's scores (0-1) are scaled.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Level 1 -> level 2 (Rekognition content moderation, model 7).
LEVEL2_BY_LEVEL1: dict[str, tuple[str, ...]] = {
    "Explicit": ("Explicit Nudity", "Explicit Sexual Activity", "Sex Toys"),
    "Non-Explicit Nudity of Intimate parts and Kissing": (
        "Non-Explicit Nudity", "Obstructed Intimate Parts", "Kissing on the Lips"),
    "Swimwear or Underwear": ("Female Swimwear or Underwear", "Male Swimwear or Underwear"),
    "Violence": ("Weapons", "Graphic Violence"),
    "Visually Disturbing": ("Death and Emaciation", "Crashes"),
    "Drugs & Tobacco": ("Products", "Drugs & Tobacco Paraphernalia & Use"),
    "Alcohol": ("Alcohol Use", "Alcoholic Beverages"),
    "Rude Gestures": ("Middle Finger",),
    "Gambling": (),
    "Hate Symbols": ("Nazi Party", "White Supremacy", "Extremist"),
}
# Level 3 -> level 2, for the level-3 names this project uses or Rekognition commonly returns.
LEVEL3_PARENT: dict[str, str] = {
    "Exposed Male Genitalia": "Explicit Nudity",
    "Exposed Female Genitalia": "Explicit Nudity",
    "Exposed Buttocks or Anus": "Explicit Nudity",
    "Exposed Female Nipple": "Explicit Nudity",
    "Bare Back": "Non-Explicit Nudity",
    "Exposed Male Nipple": "Non-Explicit Nudity",
    "Partially Exposed Buttocks": "Non-Explicit Nudity",
    "Partially Exposed Female Breast": "Non-Explicit Nudity",
    "Implied Nudity": "Non-Explicit Nudity",
    "Obstructed Female Nipple": "Obstructed Intimate Parts",
    "Obstructed Male Genitalia": "Obstructed Intimate Parts",
    "Weapon Violence": "Graphic Violence",
    "Physical Violence": "Graphic Violence",
    "Self-Harm": "Graphic Violence",
    "Blood & Gore": "Graphic Violence",
    "Explosions and Blasts": "Graphic Violence",
    "Emaciated Bodies": "Death and Emaciation",
    "Corpses": "Death and Emaciation",
    "Air Crash": "Crashes",
    "Pills": "Products",
    "Smoking": "Drugs & Tobacco Paraphernalia & Use",
    "Drinking": "Alcohol Use",
}
PARENT: dict[str, str | None] = {
    **{level1: None for level1 in LEVEL2_BY_LEVEL1},
    **{level2: level1 for level1, children in LEVEL2_BY_LEVEL1.items() for level2 in children},
    **LEVEL3_PARENT,
}
# Not a Rekognition label: faces whose apparent age is under the minor threshold (DetectFaces).
APPARENT_AGE = "Apparent Age"

# NudeNet 3.4 class -> the most specific taxonomy name it means. Classes absent here (faces, belly,
# armpits, feet) are not moderation categories and are dropped.
NUDENET_TO_TAXONOMY: dict[str, str] = {
    "FEMALE_GENITALIA_EXPOSED": "Exposed Female Genitalia",
    "MALE_GENITALIA_EXPOSED": "Exposed Male Genitalia",
    "ANUS_EXPOSED": "Exposed Buttocks or Anus",
    "BUTTOCKS_EXPOSED": "Exposed Buttocks or Anus",
    "FEMALE_BREAST_EXPOSED": "Exposed Female Nipple",
    "MALE_BREAST_EXPOSED": "Exposed Male Nipple",
    "FEMALE_BREAST_COVERED": "Female Swimwear or Underwear",
    "FEMALE_GENITALIA_COVERED": "Female Swimwear or Underwear",
    "MALE_GENITALIA_COVERED": "Male Swimwear or Underwear",
    "BUTTOCKS_COVERED": "Swimwear or Underwear",
    "ANUS_COVERED": "Swimwear or Underwear",
}
# What the local model can see at all: the names above and their ancestors.
NUDENET_COVERAGE: frozenset[str] = frozenset(
    {"Explicit Nudity", "Non-Explicit Nudity", "Swimwear or Underwear", *LEVEL2_BY_LEVEL1["Swimwear or Underwear"]})


@dataclass(frozen=True)
class Label:
    name: str
    confidence: float  # percent, 0-100
    parent: str | None = None  # None at level 1
    level: int = 1


def ancestry(name: str, parent: str | None = None) -> list[str]:
    """`name` and its ancestors, most specific first (a provider's ParentName is used when we do not
    know the name)."""
    chain = [name]
    current = PARENT.get(name, parent)
    while current and current not in chain:
        chain.append(current)
        current = PARENT.get(current)
    return chain


def level_of(name: str) -> int:
    return len(ancestry(name))


def with_ancestors(name: str, confidence: float) -> list[Label]:
    """The label and each ancestor at the same confidence, the way Rekognition reports a hierarchy."""
    chain = ancestry(name)
    return [Label(label, confidence, chain[i + 1] if i + 1 < len(chain) else None, len(chain) - i)
            for i, label in enumerate(chain)]


def nudenet_labels(detections: Iterable[Mapping[str, object]]) -> list[Label]:
    """NudeNet's `[{"class", "score", "box"}]` for one frame -> taxonomy labels, the highest
    confidence per name (a frame with two exposed breasts is one label)."""
    best: dict[str, Label] = {}
    for detection in detections:
        name = NUDENET_TO_TAXONOMY.get(str(detection["class"]))
        if name is None:
            continue
        confidence = round(float(detection["score"]) * 100, 2)  # type: ignore[arg-type]
        for label in with_ancestors(name, confidence):
            if label.name not in best or best[label.name].confidence < confidence:
                best[label.name] = label
    return sorted(best.values(), key=lambda label: (label.level, label.name))


def not_checked(coverage: frozenset[str], estimates_age: bool) -> list[str]:
    """The level-1 (or, where part of a level-1 category is covered, level-2) categories a backend
    with `coverage` cannot detect, plus the apparent age when it estimates none."""
    missing: list[str] = []
    for level1, children in LEVEL2_BY_LEVEL1.items():
        if level1 in coverage:
            continue
        seen = [child for child in children if child in coverage]
        missing += [child for child in children if child not in coverage] if seen else [level1]
    return missing + ([] if estimates_age else [APPARENT_AGE])
