"""Takes a slug that is already registered."""
SLUG = "moa"


def run(system_prompt, initial_query, client, model):
    return "x", 0
