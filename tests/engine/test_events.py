from __future__ import annotations

import pytest

from loupe.engine.core.errors import CancelledError
from loupe.engine.core.events import CancelToken, Finished, Progress, ThrottledCallback


def test_cancel_token_raises_once_set():
    token = CancelToken()
    token.raise_if_cancelled()
    token.cancel()
    assert token.cancelled
    with pytest.raises(CancelledError):
        token.raise_if_cancelled()


def test_throttle_limits_progress_but_keeps_last_and_other_events():
    seen = []
    throttled = ThrottledCallback(seen.append, max_per_second=10)
    for i in range(1000):
        throttled(Progress("scan", i, 1000))
    throttled(Progress("scan", 1000, 1000))
    throttled(Finished("scan"))
    progress = [e for e in seen if isinstance(e, Progress)]
    assert 2 <= len(progress) <= 5
    assert progress[-1].done == 1000
    assert isinstance(seen[-1], Finished)
