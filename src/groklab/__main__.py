"""`python -m groklab ...`: the `groklab` command."""

from groklab.cli import main

raise SystemExit(main())
