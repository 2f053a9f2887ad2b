"""Errors the batch client raises before anything is queued."""


class BatchInputError(ValueError):
    """A workflow, jobs file or override is not usable; the message names the place and the fix."""
