"""The WSGI entry point for gunicorn: `gunicorn -c config/gunicorn.conf.py wsgi:app`."""
from status_service import create_app

app = create_app()
