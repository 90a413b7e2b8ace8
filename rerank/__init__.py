"""Vision-language re-rankers (a local transformers model, or an OpenAI-compatible API)."""
