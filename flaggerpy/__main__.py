"""``python -m flaggerpy``: the same command as the ``flaggerpy`` script."""

from __future__ import annotations

from flaggerpy.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
