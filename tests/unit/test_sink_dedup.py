from __future__ import annotations

import uuid

from processors.sink.dedup import batch_event_ids, drop_seen

A, B, C = (uuid.UUID(int=n) for n in (1, 2, 3))


def test_the_batch_ids_are_every_rows_first_column_as_uuids() -> None:
    rows = {"views": [[A, "x"], [str(B), "y"]], "likes": [[C, "z"]]}
    assert batch_event_ids(rows) == [A, B, C]


def test_rows_already_stored_are_dropped() -> None:
    rows = {"views": [[A, "first"], [B, "second"]], "likes": [[C, "like"]]}
    assert drop_seen(rows, {B, C}) == {"views": [[A, "first"]], "likes": []}


def test_an_event_twice_in_one_batch_is_kept_once_its_first_row() -> None:
    # a retry that lands in the same batch, with another occurred_at
    rows = {"views": [[A, "10:59"], [B, "11:00"], [str(A), "11:01"]]}
    assert drop_seen(rows, set()) == {"views": [[A, "10:59"], [B, "11:00"]]}


def test_the_same_batch_and_ledger_give_the_same_rows_on_a_retry() -> None:
    rows = {"views": [[A, 1], [B, 2]], "likes": [[A, 3], [C, 4]]}
    assert drop_seen(rows, {C}) == drop_seen(rows, {C}) == {"views": [[A, 1], [B, 2]], "likes": []}
    assert rows == {"views": [[A, 1], [B, 2]], "likes": [[A, 3], [C, 4]]}, "the batch itself is left as it was"
