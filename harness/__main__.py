"""`python -m harness ...`: the same as the `harness` command (see harness/cli.py)."""
import sys

from harness.cli import main

sys.exit(main())
