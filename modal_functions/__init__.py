"""The Modal side of canvascast.

Modal functions are thin wrappers around ``canvascast_cli.engines`` (the same code runs
locally and in containers). Their resources, scaling, timeouts and retries come from the
project's ``modal.toml`` through ``modal_functions.resources``. The app is
``modal_functions/app.py`` (deploy: ``modal deploy -m modal_functions.app``; see
docs/modal.md); ``whisper.py`` and ``image_gen.py`` bake the model weights into the images.
"""
