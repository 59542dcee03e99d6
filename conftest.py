"""Repository-wide pytest setup: notebooks run headless (static figures for widgets)."""
import os

os.environ.setdefault("KIT_HEADLESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
