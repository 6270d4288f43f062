"""The few exceptions a user sees; each message is one line naming the problem and the fix."""

from __future__ import annotations


class AutocompressError(Exception):
    """Base class of every error autocompress raises on purpose."""

    exit_code = 1


class UserInputError(AutocompressError):
    """Bad input from the user (a flag, a file, a name): the CLI exits with code 2."""

    exit_code = 2


class UnknownNameError(UserInputError):
    """A name that is not in a registry (model, task, target, sampler, ...)."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        listing = ", ".join(known) if known else "(none registered)"
        super().__init__(f"unknown {kind} {name!r}; choose one of: {listing}")
        self.kind, self.name, self.known = kind, name, known


class BudgetError(UserInputError):
    """A budget string that cannot be parsed (`--budget 50parsecs`)."""


class SpaceError(UserInputError):
    """A search-space file that is malformed; the message names the key and what is wrong."""


class PlanError(UserInputError):
    """A plan (JSON or in memory) that does not fit the model or the schema."""


class StudyError(UserInputError):
    """A study that does not exist, or that belongs to another model or task."""


class PlanWarning(UserWarning):
    """Part of a plan that a layer could not take (a rank that saves no weights, a 2:4 pattern
    on an input width that is not a multiple of 4): the layer stays as it was. A search
    records these on the trial instead of printing them."""
