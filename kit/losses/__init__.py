"""Every loss of the five papers, as small documented functions, one module per paper family.

Shape contract: ``logits`` are [B,C,h,w] (any resolution; they are upsampled to the
label size where a label is involved), ``labels`` are int64 [B,H,W] with 255 = ignore,
probabilities are softmax outputs [B,C,H,W]. All losses run on CPU and GPU and
return a scalar (mean over the valid entries) unless said otherwise.

``kit.losses.<name>`` reaches every loss; the family modules (``common``, ``adaptseg``,
``das3``, ``ripu``, ``ddep``) hold them.
"""
from . import adaptseg, common, das3, ddep, ripu
from .adaptseg import *  # noqa: F401,F403
from .common import *  # noqa: F401,F403
from .das3 import *  # noqa: F401,F403
from .ddep import *  # noqa: F401,F403
from .ripu import *  # noqa: F401,F403

__all__ = [*common.__all__, *adaptseg.__all__, *das3.__all__, *ddep.__all__, *ripu.__all__]
