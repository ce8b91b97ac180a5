"""Checks the end-to-end tests share: a request marker, the upstream calls the conversation log
recorded for it, and that the proxy's ``usage`` is exactly their sum."""

from __future__ import annotations

import uuid

from .conftest import MODEL


def marker(prefix: str = "e2e") -> str:
    """A unique ``user`` value, to find a request's record in the conversation log."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def provider_calls(proxy, user: str, *, same_model: bool = True) -> list[dict]:
    """The upstream calls logged for the request marked ``user``; asserts the request and every
    call succeeded, at least one call was made, and (``same_model``) each went to ``MODEL``."""
    [record] = proxy.log_records(user)
    assert record["error"] is None
    calls = record["provider_calls"]
    assert calls and all(c["error"] is None for c in calls)
    if same_model:
        assert all(c["provider_request"]["model"] == MODEL for c in calls)
    return calls


def assert_usage_is_the_sum(completion, calls: list[dict]) -> None:
    """``completion.usage`` is non-zero and exactly the sum of the logged calls' usage."""
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens == sum(c["response"]["usage"]["prompt_tokens"] for c in calls)
    assert usage.completion_tokens == sum(c["response"]["usage"]["completion_tokens"]
                                          for c in calls)
