"""``python -m canvascast_cli`` — same as the ``canvascast`` console script."""

from __future__ import annotations

from canvascast_cli.cli.app import main

if __name__ == "__main__":
    main()
