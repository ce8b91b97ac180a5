"""``executecode`` and ``privacy`` end to end: the openai SDK, the session proxy, the embedded
SmolLM2-135M. The model is tiny, so no answer is judged: these check from the conversation log
that the sandboxed program's output reached the final call, that no upstream call saw the
personal data, and that usage is the exact sum of the upstream calls."""

from __future__ import annotations

import uuid

import pytest

from ..conftest import validate_openapi
from .conftest import MODEL
from .helpers import assert_usage_is_the_sum, marker, provider_calls

pytestmark = pytest.mark.e2e


def ask(client, model: str, content: str, user: str, **extra_body):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=32,
        user=user, extra_body=extra_body or None)
    return raw.parse(), raw.http_response.json()


def prompt_texts(call: dict) -> str:
    return "\n".join(str(m.get("content")) for m in call["provider_request"]["messages"])


def test_executecode_output_reaches_the_final_call(client, proxy):
    user = marker("e2e-plugins-b")
    code = "print(sum(i * i for i in range(12345)))"
    completion, data = ask(client, f"executecode-{MODEL}",
                           f"What does this print?\n```python\n{code}\n```", user)
    validate_openapi(data, "CreateChatCompletionResponse")
    meta = data["choices"][0]["optillm_executecode"]
    expected = str(sum(i * i for i in range(12345)))
    assert meta["source"] == "request" and meta["ok"] and meta["stdout"].strip() == expected
    calls = provider_calls(proxy, user, same_model=False)
    assert len(calls) == 1 and expected in prompt_texts(calls[0])
    assert_usage_is_the_sum(completion, calls)


def test_privacy_keeps_the_email_from_the_upstream(client, proxy):
    user = marker("e2e-plugins-b")
    email = f"{uuid.uuid4().hex[:8]}@example.org"
    completion, data = ask(client, f"privacy-{MODEL}",
                           f"Write one sentence to Alice Johnson at {email}.", user)
    validate_openapi(data, "CreateChatCompletionResponse")
    calls = provider_calls(proxy, user, same_model=False)
    assert len(calls) == 1
    sent = prompt_texts(calls[0])
    assert email not in sent and "<EMAIL_ADDRESS_1>" in sent
    assert data["choices"][0]["optillm_privacy"]["anonymized"]["EMAIL_ADDRESS"] == 1
    assert_usage_is_the_sum(completion, calls)
