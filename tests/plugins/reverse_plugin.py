"""An OptiLLM-format drop-in plugin without request_config: answers with the reply reversed."""

SLUG = "reverse"


def run(system_prompt, initial_query, client, model):
    response = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": system_prompt},
                  {"role": "user", "content": initial_query}],
        max_tokens=32,
    )
    return response.choices[0].message.content[::-1], response.usage.completion_tokens
