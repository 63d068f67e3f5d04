"""``python -m alignment inspect``: see :mod:`alignment.cli`."""

from __future__ import annotations

from alignment.cli import main

raise SystemExit(main())
