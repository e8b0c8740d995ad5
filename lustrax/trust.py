"""The trust-and-safety CLI (`lustrax dmca ...`, `lustrax complaints ...`): through the ingest API
with an admin token, like `lustrax review`, so every decision takes the API's one path."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from common.settings import Settings
from lustrax.review import _call

COMPLAINT_COLUMNS = ["complaint_id", "video_id", "reason", "status", "hidden", "received_at", "due_at", "overdue",
                     "contact"]


def notice_show(settings: Settings, url: str | None, notice_id: str) -> tuple[list[str], list[list[Any]]]:
    """A notice's videos as (columns, rows) for format_table."""
    notice = _call(settings, url, "GET", f"/v1/dmca/notices/{quote(notice_id, safe='')}")
    columns = ["video_id", "status", "taken_down_at", "counter_notice_at", "restore_after", "court_action_at",
               "restored_at"]
    return columns, [[video[column] for column in columns] for video in notice["videos"]]


def court_action(settings: Settings, url: str | None, notice_id: str, video_id: str | None, note: str | None) -> str:
    """Record the claimant's court action (the restore stops); the notice's status."""
    body = {"video_id": video_id, "note": note}
    answer = _call(settings, url, "POST", f"/v1/admin/dmca/notices/{quote(notice_id, safe='')}/court-action", body)
    return str(answer["status"])


def complaint_list(settings: Settings, url: str | None, everything: bool,
                   limit: int) -> tuple[list[str], list[list[Any]]]:
    status = "all" if everything else "open"
    items = _call(settings, url, "GET", f"/v1/admin/complaints?status={status}&limit={limit}")["items"]
    return COMPLAINT_COLUMNS, [[item[column] for column in COMPLAINT_COLUMNS] for item in items]


def complaint_decide(settings: Settings, url: str | None, complaint_id: str, uphold: bool, note: str | None) -> str:
    body = {"decision": "uphold" if uphold else "dismiss", "note": note}
    return str(_call(settings, url, "POST", f"/v1/admin/complaints/{quote(complaint_id, safe='')}", body)["status"])
