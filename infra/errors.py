"""Errors raised while installing or preparing infrastructure."""

from common.errors import ComponentError


class InstallError(ComponentError):
    """A tool or runtime could not be fetched or built (Maven, Go, Java missing...)."""
