"""Errors raised for bad user input (configs, data)."""


class ConfigError(ValueError):
    """A config is wrong: the message says what, where (file, key) and what is allowed."""
