"""``python -m kit ...`` is the ``kit`` command (needed by ``torchrun -m kit train ...``)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
