"""auditor: one-command audits of Keras image classifiers."""

__version__ = "0.1.0"
