"""Repository-wide pytest setup: notebooks run headless (static figures for widgets)."""
import os

os.environ.setdefault("KIT_HEADLESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# file hashes of the tests' temporary datasets are remembered in-process only, not in the user's home
os.environ.setdefault("KIT_HASH_STORE", "")
