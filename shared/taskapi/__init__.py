"""The Lambda layer shared by every function of the task API."""

__version__ = "0.1.0"
