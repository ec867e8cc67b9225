"""`python -m streamrec.cli`: the same as the `streamrec` command."""

import sys

from streamrec.cli import main

sys.exit(main())
