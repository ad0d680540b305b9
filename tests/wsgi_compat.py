"""gunicorn entry point for tests/test_e2e_openai_sdk.py: the real app."""
from nodes import create_app

app = create_app()
