"""Who may see which catalog record (pure): published videos are public; any other state only to
the uploader and admins, and to everyone else it does not exist (404, not 403: no leak)."""

from __future__ import annotations

from catalog.fold import VideoRecord
from common.tokens import Principal

ADMIN_ROLE = "admin"


def is_admin(principal: Principal | None) -> bool:
    return principal is not None and ADMIN_ROLE in principal.roles


def visible(record: VideoRecord, principal: Principal | None) -> bool:
    if record.published or is_admin(principal):
        return True
    return principal is not None and principal.user_id == record.uploader_id
