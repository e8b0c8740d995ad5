"""The DMCA notice check (producers/routers/dmca.py check_notice): every element of 17 U.S.C.
512(c)(3)(A) missing or false is named in one 422, with every URL that names no public video."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from common.errors import ApiError
from infra.s3.layout import new_video_id, video_id_named_by
from producers.events import every_problem
from producers.routers.dmca import CounterNotice, Email, check_notice

CDN = "http://cdn.test/lustrax-public"
PUBLIC = new_video_id()
PREMIUM = new_video_id()
KNOWN = {PUBLIC, PREMIUM}


def public_video(url: str) -> str | None:
    video_id = video_id_named_by(url, CDN)
    return video_id if video_id in KNOWN else None


def notice(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "copyrighted_work": "Sunset over Lisbon (2023 film)",
        "infringing_urls": [f"{CDN}/videos/{PUBLIC}/master.m3u8", PREMIUM],
        "complainant": {"name": "Ana Lima", "email": "ana@example.com", "address": None},
        "good_faith_statement": True, "accuracy_statement": True, "signature": "Ana Lima",
    }
    for key, value in changes.items():
        if value is ...:
            body.pop(key)
        else:
            body[key] = value
    return body


def problems(body: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        check_notice(json.dumps(body).encode(), public_video)
    return caught.value


def test_a_complete_notice_names_each_video_once() -> None:
    parsed, found = check_notice(json.dumps(notice(infringing_urls=[
        f"{CDN}/videos/{PUBLIC}/720p/seg_00001.ts?x=1", PUBLIC, f"{CDN}/premium/videos/{PREMIUM}/master.m3u8"])).encode(),
        public_video)
    assert [video_id for video_id, _ in found] == [PUBLIC, PREMIUM]
    assert parsed.complainant.email == "ana@example.com"


# (what is wrong, the body, the fields the 422 names): one element each, then several at once.
CASES = [
    ("signature missing (i)", notice(signature=...), ["signature"]),
    ("signature blank (i)", notice(signature="   "), ["signature"]),
    ("copyrighted work missing (ii)", notice(copyrighted_work=...), ["copyrighted_work"]),
    ("infringing material missing (iii)", notice(infringing_urls=...), ["infringing_urls"]),
    ("infringing material empty (iii)", notice(infringing_urls=[]), ["infringing_urls"]),
    ("contact missing (iv)", notice(complainant=...), ["complainant"]),
    ("contact name missing (iv)", notice(complainant={"email": "a@b.co"}), ["complainant.name"]),
    ("contact e-mail not one (iv)", notice(complainant={"name": "A", "email": "nope"}), ["complainant.email"]),
    ("good faith missing (v)", notice(good_faith_statement=...), ["good_faith_statement"]),
    ("good faith false (v)", notice(good_faith_statement=False), ["good_faith_statement"]),
    ("good faith a string (v)", notice(good_faith_statement="yes"), ["good_faith_statement"]),
    ("accuracy missing (vi)", notice(accuracy_statement=...), ["accuracy_statement"]),
    ("accuracy false (vi)", notice(accuracy_statement=False), ["accuracy_statement"]),
    ("an unknown video", notice(infringing_urls=[PUBLIC, new_video_id()]), ["infringing_urls[1]"]),
    ("a URL of another site", notice(infringing_urls=[f"http://evil.test/videos/{PUBLIC}/master.m3u8"]),
     ["infringing_urls[0]"]),
    ("a traversal in the URL", notice(infringing_urls=[f"{CDN}/videos/{PUBLIC}/../../etc/passwd"]),
     ["infringing_urls[0]"]),
    ("an odd id", notice(infringing_urls=["../../../etc", "A" * 24]), ["infringing_urls[0]", "infringing_urls[1]"]),
    ("an unknown field", notice(extra="x"), ["extra"]),
    ("every element at once", {}, ["copyrighted_work", "infringing_urls", "complainant", "good_faith_statement",
                                   "accuracy_statement", "signature"]),
    ("false statements and an unknown video together",
     notice(good_faith_statement=False, accuracy_statement=False, infringing_urls=[new_video_id()]),
     ["good_faith_statement", "accuracy_statement", "infringing_urls[0]"]),
]


@pytest.mark.parametrize(("name", "body", "fields"), CASES, ids=[case[0] for case in CASES])
def test_each_missing_or_false_element_is_named(name: str, body: dict[str, Any], fields: list[str]) -> None:
    error = problems(body)
    assert (error.status, error.code) == (422, "invalid_notice")
    assert sorted(error.fields) == sorted(fields)
    assert error.field == error.fields[0]
    assert all(field in error.message for field in fields)
    assert error.body()["error"]["fields"] == list(error.fields)


def test_the_message_names_the_statutory_element() -> None:
    error = problems(notice(accuracy_statement=False))
    assert "512(c)(3)(A)(vi)" in error.message and "perjury" in error.message


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"'])
def test_a_body_that_is_not_a_json_object(body: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        check_notice(body, public_video)
    assert caught.value.status in (400, 422)


def test_oversized_fields_are_refused() -> None:
    error = problems(notice(copyrighted_work="x" * 1001, infringing_urls=[PUBLIC] * 51))
    assert set(error.fields) >= {"copyrighted_work", "infringing_urls"}


COUNTER = {"notice_id": "dmca_0123456789abcdefghij", "video_id": PUBLIC, "good_faith_mistake_statement": True,
           "consent_to_jurisdiction": True, "name": "Bo Sato", "address": "1 Main St", "signature": "Bo Sato"}


@pytest.mark.parametrize("missing", sorted(set(COUNTER)))
def test_each_counter_notice_element_is_named(missing: str) -> None:
    body = {k: v for k, v in COUNTER.items() if k != missing}
    with pytest.raises(ValidationError) as caught:
        CounterNotice.model_validate_json(json.dumps(body))
    error = every_problem(caught.value)
    assert error.status == 422 and error.fields == (missing,)


def test_false_counter_notice_statements_are_named_together() -> None:
    body = {**COUNTER, "good_faith_mistake_statement": False, "consent_to_jurisdiction": False}
    with pytest.raises(ValidationError) as caught:
        CounterNotice.model_validate_json(json.dumps(body))
    assert set(every_problem(caught.value).fields) == {"good_faith_mistake_statement", "consent_to_jurisdiction"}


@pytest.mark.parametrize(("text", "named"), [
    (PUBLIC, PUBLIC), (f" {PUBLIC} ", PUBLIC), (f"{CDN}/videos/{PUBLIC}/master.m3u8", PUBLIC),
    (f"{CDN}/premium/videos/{PUBLIC}/thumb.jpg#t", PUBLIC), (f"{CDN}/videos/{PUBLIC}", PUBLIC),
    (f"{CDN}/videos/{PUBLIC}/./x", None), (f"{CDN}/uploads/{PUBLIC}", None), (f"{CDN}/videos/short/x", None),
    (f"https://other/videos/{PUBLIC}/x", None), ("", None), ("videos/../../x", None),
])
def test_the_urls_a_notice_may_name(text: str, named: str | None) -> None:
    assert video_id_named_by(text, CDN) == named


def test_the_email_pattern_means_the_same_to_the_document_and_the_validator() -> None:
    # schemathesis built "x@y.z\x85OT": allowed by `\s` in ECMA-262 (the document's regex dialect),
    # refused by `\s` in the validator's. The pattern now names the characters it refuses.
    pattern = TypeAdapter(Email).json_schema()["pattern"]
    assert "\\s" not in pattern
    for address in ("x@y.z\x85OT", "a b@c.d", "\x83@x.y"):
        with pytest.raises(ValidationError):
            TypeAdapter(Email).validate_python(address)
    assert TypeAdapter(Email).validate_python("ü@ö.de") == "ü@ö.de"
