"""Errors shared by drivers, sequences and the controller.

Every error names the instrument (or file, or operation) it is about, so that a lab user can
act on the message alone.
"""


class QnodeError(Exception):
    """Base of every error qnode raises on purpose."""


class LabConfigError(QnodeError):
    """A lab configuration file is invalid: the message names file, key path and problem."""

    def __init__(self, path: str, key_path: str, problem: str) -> None:
        self.path = path
        self.key_path = key_path
        self.problem = problem
        where = f"{path}: {key_path}" if key_path else path
        super().__init__(f"{where}: {problem}")


class InstrumentError(QnodeError):
    """Something went wrong talking to one instrument."""

    def __init__(self, instrument: str, message: str) -> None:
        self.instrument = instrument
        super().__init__(f"{instrument}: {message}")


class LimitError(InstrumentError):
    """A value was refused before any byte reached the instrument."""

    def __init__(self, instrument: str, quantity: str, value: float, limit: tuple) -> None:
        self.quantity = quantity
        self.value = value
        self.limit = limit
        lo, hi = limit
        super().__init__(
            instrument, f"{quantity} = {value:g} is outside the lab limit [{lo:g}, {hi:g}]"
        )


class InstrumentTimeout(InstrumentError):
    """The instrument did not answer within the configured timeout."""


class InstrumentReplyError(InstrumentError):
    """The instrument answered something that cannot be the answer to what was asked."""


class InstrumentConnectionError(InstrumentError):
    """The connection is lost and could not be re-established within the back-off budget."""


class InstrumentReportedError(InstrumentError):
    """The instrument's own error queue reported an error after a command."""


class ProgramError(QnodeError):
    """A sequencer program is invalid; names the line (or instruction index) and the reason."""

    def __init__(self, line: int, reason: str, *, what: str = "line") -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"{what} {line}: {reason}")
