"""A drop-in plugin in OptiLLM's own format, for the end-to-end tests.

It makes one real call through the ``client`` it is given and returns the reply upper-cased
together with the completion tokens that call reported, exactly as OptiLLM plugins do.
"""

SLUG = "echo_upper"


def run(system_prompt, initial_query, client, model, request_config=None):
    """Answer ``initial_query`` once and return ``(ANSWER, completion_tokens)``."""
    config = request_config or {}
    messages = [{"role": "user", "content": initial_query}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    response = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=config.get("max_tokens", 32),
    )
    return response.choices[0].message.content.upper(), response.usage.completion_tokens
