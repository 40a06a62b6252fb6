"""A WSGI app for gunicorn --preload (tests/trace_attach.rs, issue 16): the master builds
300,000 string objects before it forks its workers; every request walks them, and the
reference-count writes copy the pages holding them into the worker that serves it."""

DATA = [str(i) * 3 for i in range(300_000)]


def app(environ, start_response):
    n = sum(len(x) for x in DATA)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(n).encode()]
