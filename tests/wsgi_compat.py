"""gunicorn entry point for tests/test_e2e_openai_sdk.py: the real app, with the OpenAI-compatible
blueprint registered if create_app does not register it (yet)."""
from app import create_app
from nodes import openai_compat

app = create_app()
if openai_compat.bp.name not in app.blueprints:
    app.register_blueprint(openai_compat.bp)
