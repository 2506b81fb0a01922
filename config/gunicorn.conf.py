"""Gunicorn settings for the web tier.

Like gunicorn's own defaults, it binds 0.0.0.0:$PORT when PORT is set (else 127.0.0.1:8000) and
runs $WEB_CONCURRENCY workers.
"""
import os

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
timeout = 30  # a request that takes this long is a bug: a request does no probing
graceful_timeout = 10
accesslog = "-"
# No request headers in the access log: the Authorization header must never be written down.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
