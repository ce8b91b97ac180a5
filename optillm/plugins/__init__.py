"""Built-in plugins, registered through the same hook as third-party ones.

A module here is either native (``SLUG`` + ``run(ctx)``, see ``optillm.approaches``) or an
OptiLLM-style plugin (``SLUG`` + ``run(system_prompt, initial_query, client, model[,
request_config])``), adapted at load time.
"""
