"""Has no SLUG."""

def run(system_prompt, initial_query, client, model):
    return "x", 0
