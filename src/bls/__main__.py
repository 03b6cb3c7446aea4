"""``python -m bls`` runs the ``bls-prune`` command line."""

from bls.cli import main

raise SystemExit(main())
