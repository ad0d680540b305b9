"""`gunicorn --pythonpath tests wsgi_batch:app`: the service, batch and job endpoints included."""
from nodes import create_app

app = create_app()
