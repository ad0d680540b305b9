"""`gunicorn --pythonpath tests wsgi_batch:app`: the service with the batch and job endpoints, whether
or not app/__init__.py registers them yet."""
from app import create_app
from nodes import batch

app = create_app()
if "batch" not in app.blueprints:
    app.register_blueprint(batch.bp)
