"""Errors written for the person who has to act on them."""


class WorkerError(Exception):
    """A problem the user can fix: the message says what happened and what to do."""


class ModelError(WorkerError):
    """A model could not be found, loaded, or does not match the contract."""


class ConfigError(WorkerError):
    """The configuration is invalid; the message lists one line per problem."""
