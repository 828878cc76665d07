"""gunicorn settings for the portal: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Every value can be overridden from the environment (or on the command line, which wins),
so one file serves the demo (`make run`), the race tests, the benchmark and production.
"""

import gc
import multiprocessing
import os

# Where to listen. Behind a reverse proxy keep 127.0.0.1 and let the proxy face the network.
bind = os.environ.get("BIND", "127.0.0.1:5000")

# Sync workers: each request holds one worker, so 2 per core is the usual start. A clinic desk
# makes a handful of requests a minute; the benchmark in bench/ shows what one machine can carry.
workers = int(os.environ.get("WEB_CONCURRENCY", str(multiprocessing.cpu_count() * 2)))
worker_class = "sync"

# Rendering a Chinese poster loads Noto CJK and grows a worker to ~600 MB: recycle workers after
# a few hundred requests (the jitter keeps them from restarting all at once).
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "500"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "50"))

# A card-sheet PDF download may take a few seconds on a slow disk; nothing else comes close.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 30
keepalive = 5

# Client addresses from a reverse proxy are handled by the app (TRUSTED_PROXY_HOPS), not by
# gunicorn's forwarded_allow_ips, so that the rate limiter and the audit log agree.
forwarded_allow_ips = "127.0.0.1"

accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None  # "-" for stdout
# Its lines leave out query strings (phone numbers) and mask /p/<token> and /v/<code>: see clinic/access_log.py.
logger_class = "clinic.access_log.PrivateAccessLogger"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# gunicorn's control socket lives at one fixed path per user: two servers on one machine (the
# demo beside the race tests) would fight over it, and nothing here uses it.
control_socket_disable = True

# Load the app once in the master, then fork: faster start, less memory, and a broken
# configuration fails loudly before any worker starts.
preload_app = True


def when_ready(server):
    """Mark the database in use while the server runs, and hide the preloaded app from the garbage collector.

    The mark (a shared lock the workers inherit) makes `flask restore` refuse until the server stops.
    The app's ~170,000 objects live as long as the process: without ``gc.freeze()`` every full
    collection in a worker walks them all (about 100 ms here, a stall for whichever request it lands
    in) and writes to their pages, which copy-on-write then copies into each worker.
    """
    from clinic.services.backup import hold_while_serving

    hold_while_serving(server.app.wsgi())
    gc.freeze()


def post_fork(server, worker):
    """Each worker opens its own database connections: never share a pool across fork."""
    from clinic.extensions import db

    app = server.app.wsgi()
    with app.app_context():
        db.engine.dispose(close=False)


def worker_exit(server, worker):
    """A worker retired (``max_requests``) or stopped writes the invite page opens it still holds."""
    from clinic.services.invite_opens import write_all

    write_all()
