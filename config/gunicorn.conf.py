"""Gunicorn settings for the web tier.

Like gunicorn's own defaults, it binds 0.0.0.0:$PORT when PORT is set (else 127.0.0.1:8000) and
runs $WEB_CONCURRENCY workers.
"""
import os
import shutil
import tempfile
from pathlib import Path

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))

# Slow and idle clients. A sync worker reads a request with a blocking read and no deadline, so one
# client that sends half a request holds the whole worker until gunicorn kills it after `timeout`.
# The gthread worker accepts and waits for idle connections on its own poller, and gives each
# request a thread; a connection that stalls holds only its thread. Limits (gunicorn 27.0.1, none
# of them a setting): a new connection that sends nothing holds a thread for 5 s, then waits on the
# poller, without a thread, and is closed after `keepalive` seconds; a connection that has sent part
# of a request holds its thread until the client finishes or hangs up: there is no header deadline.
# So `threads` is how many stalled clients a worker outlasts; it is sized well above any one
# client's few connections, and a request costs microseconds of Python, so idle threads cost only
# memory (a few tens of kB each).
worker_class = "gthread"
threads = 32
# Connections a worker holds at once: busy, queued for a thread, and idle kept-alive ones. Kept
# small so that a worker whose threads are all stalled stops accepting (the others take new
# clients) instead of queueing up to gunicorn's default of 1000 behind them. At most
# worker_connections - threads (96) are kept alive idle; past that, responses close the connection.
worker_connections = 128
keepalive = 5  # seconds an idle kept-alive (or silent new) connection may hold its slot

timeout = 30  # a request that takes this long is a bug: a request does no probing
graceful_timeout = 10

# Every log line goes through status_service.logs, which redacts query strings, URL credentials and
# Authorization values, whatever library wrote the line.
logger_class = "status_service.logs.RedactingLogger"
accesslog = "-"
# No request headers and no query string (%(U)s is the path alone): the Authorization header and
# keys sent as query parameters must never be written down.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'

# /metrics sums every worker's request counters (prometheus_client's multiprocess mode): each worker
# writes its own to files here. A directory of our own unless the operator names one; either way it
# starts empty, as prometheus_client requires, and is set before any worker imports the library.
_made_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _made_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="status-metrics-")
else:
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def on_starting(server):
    """Clear what an earlier run left in the metrics directory."""
    for stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        stale.unlink()


def child_exit(server, worker):
    """Let a dead worker's gauges go (its counters stay in the sums, as counters must)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics directory if it was made here."""
    if _made_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
