"""optillm inside other tools' processes: ``optillm.integrations.litellm`` makes optillm a LiteLLM
custom provider (``litellm.completion(model="optillm/<approach>/<model>")``)."""
