"""The WSGI entry point: `gunicorn wsgi:app` (settings from the environment)."""
from nodes import create_app

try:
    app = create_app()
except SystemExit as exc:
    # A malformed setting. A worker exiting with SystemExit is restarted by gunicorn forever;
    # AppImportError makes gunicorn print the message and stop ("App failed to load").
    if not isinstance(exc.code, str):
        raise
    try:
        from gunicorn.errors import AppImportError
    except ImportError:
        raise exc from None
    raise AppImportError(f"flowcall cannot start: {exc.code}") from None
