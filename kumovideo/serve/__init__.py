"""`kumo serve`: an HTTP server in OpenAI's Videos API shape, with models kept warm.

One process holds the pipelines (loaded once), a bounded job queue, one worker thread per
device and a SQLite job store under the data dir, so jobs and finished clips survive a
restart. docs/serving.md is the API reference.

    jobs.py    the SQLite job store (what survives a restart)
    params.py  a create request's fields -> a checked job spec (the project's validators)
    worker.py  the warm models and the worker thread that runs jobs and reports progress
    app.py     the Starlette app (routes, auth, body limit, error bodies) and `run_server`
    errors.py  OpenAI-style error bodies; limits.py  the request limits
"""
