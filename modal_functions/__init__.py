"""The Modal side of canvascast.

Modal functions are thin wrappers around ``canvascast_cli.engines`` (the same code runs
locally and in containers). Their resources, scaling, timeouts and retries come from the
project's ``modal.toml`` through ``modal_functions.resources``. The app module itself
(``modal_functions/app.py``) lands with the remote backend.
"""
