"""Drop-in replacements for other libraries' estimators, run by modeshift's engine.

- :mod:`modeshift.compat.hmmlearn`: ``GaussianHMM``, ``GMMHMM``, ``CategoricalHMM``,
  ``MultinomialHMM`` and ``PoissonHMM`` with hmmlearn's API.
"""
