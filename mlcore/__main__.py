"""``python -m mlcore train|evaluate|translate`` (see :mod:`mlcore.cli`)."""

from mlcore.cli import main

raise SystemExit(main())
