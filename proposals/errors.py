"""Exceptions of the proposals package, each carrying a message meant for the user.

The package never imports ``sppdet``; the CLI turns these into its own error types.
"""

from __future__ import annotations


class ProposalError(Exception):
    """Base class: ``str(error)`` names the file or option and the reason."""


class ImageReadError(ProposalError):
    """An image file is missing, unreadable or not a decodable image."""


class CacheMismatchError(ProposalError):
    """A proposal directory was made with another method or other parameters."""


class CacheMissingError(ProposalError):
    """A proposal directory, its meta.json, or one image's file does not exist."""


class WorkerDiedError(ProposalError):
    """A worker process died (killed, out of memory); the run stopped, the rerun resumes."""
