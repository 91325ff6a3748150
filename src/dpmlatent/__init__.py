"""dpmlatent: the helper package of the Latent Diffusion Lab book.

One module per idea: :mod:`~dpmlatent.data` (data sets), :mod:`~dpmlatent.zoo` (shipped
models), :mod:`~dpmlatent.train` (training loops and the rebuild command),
:mod:`~dpmlatent.sampling` (plain sampling), :mod:`~dpmlatent.classifier`,
:mod:`~dpmlatent.metrics` (sample quality), :mod:`~dpmlatent.plotting`.
"""

__version__ = "0.1.0"
