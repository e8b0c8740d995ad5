"""The retry policy of the transcode worker (pure: no ffmpeg, no S3, no Kafka)."""

from __future__ import annotations

import asyncio

import pytest

from processors.transcode.errors import CorruptSourceError, TransientTranscodeError
from processors.transcode.pipeline import FinalTranscodeFailure, retry_delay_s, run_with_retries


def _run(failures: list[Exception], max_attempts: int = 4) -> tuple[object, list[float], int]:
    calls = 0
    slept: list[float] = []

    async def operation() -> str:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        return "ladder"

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    try:
        result: object = asyncio.run(run_with_retries(operation, max_attempts, 1.0, sleep))
    except FinalTranscodeFailure as failure:
        result = failure
    return result, slept, calls


def test_transient_errors_are_retried_with_growing_delays() -> None:
    result, slept, calls = _run([TransientTranscodeError("s3 down"), TransientTranscodeError("s3 down")])
    assert result == "ladder" and calls == 3
    assert 0.8 <= slept[0] <= 1.2 and 1.6 <= slept[1] <= 2.4


def test_a_corrupt_source_fails_at_once() -> None:
    result, slept, calls = _run([CorruptSourceError("not video")])
    assert isinstance(result, FinalTranscodeFailure) and result.attempt == 1 and not result.error.retryable
    assert slept == [] and calls == 1


def test_transient_errors_stop_after_the_last_attempt() -> None:
    result, slept, calls = _run([TransientTranscodeError("timeout")] * 5, max_attempts=3)
    assert isinstance(result, FinalTranscodeFailure) and result.attempt == 3 and result.error.retryable
    assert calls == 3 and len(slept) == 2


def test_other_exceptions_are_not_swallowed() -> None:
    with pytest.raises(ZeroDivisionError):
        _run([ZeroDivisionError()])


def test_backoff_is_capped() -> None:
    assert retry_delay_s(20, base_s=2, cap_s=60, jitter=0) == 60
    assert retry_delay_s(1, base_s=2, jitter=0) == 2
