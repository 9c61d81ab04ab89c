"""HTTP schemas (pydantic): `openai.py` for the OpenAI-compatible API, `api.py` for /api."""
