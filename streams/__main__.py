"""`python -m streams`: run the stream worker (same as `streamrec worker`)."""

from streamrec.settings import load_settings
from streams.worker import run_worker

if __name__ == "__main__":
    run_worker(load_settings())
