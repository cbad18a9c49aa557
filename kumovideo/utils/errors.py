"""Errors a user can fix. The CLI prints them as one line and exits with status 2."""


class KumoInputError(ValueError):
    """Bad input from the user: the message says what is wrong and what to do."""
