"""`python -m streams`: run the stream worker (same as `streamrec worker`)."""

import sys

from streamrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["worker", *sys.argv[1:]]))
