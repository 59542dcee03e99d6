"""kit: models, losses, trainers and a toy domain-gap world for transferable semantic segmentation.

The notebooks in ``notebooks/`` import this package; nothing in it is generated from them.
"""

__version__ = "0.1.0"
IGNORE_INDEX = 255
