"""``python -m bls`` runs the ``bls-prune`` command line."""

from bls.app.cli import main

raise SystemExit(main())
