"""The JSON API under /api/v1 (FastAPI; its OpenAPI document is generated from the code)."""
