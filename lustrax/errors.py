"""Errors of the composition root; each package under it has its own errors module."""


class LustraxError(Exception):
    """Base of every error the CLI reports as one line instead of a traceback."""


class ConfigError(LustraxError):
    """A setting is missing or invalid."""


class ComponentError(LustraxError):
    """A stack component failed to install, start or answer; the message names it and its log."""

    def __init__(self, component: str, message: str, log_path: object | None = None) -> None:
        self.component = component
        self.log_path = log_path
        suffix = f" (log: {log_path})" if log_path else ""
        super().__init__(f"{component}: {message}{suffix}")
