"""`python -m todoapp ...`: see todoapp.cli."""

from todoapp.cli import main

raise SystemExit(main())
