"""A reading's quality and reason -> the OPC UA StatusCode a SCADA understands (OPC 10000-4 7.39,
OPC 10000-8 for the data-access codes).

good is Good. uncertain and bad pick the code closest to the reason: a reason that already is an
OPC UA status name (an OPC UA device's own code, passed through) keeps it; otherwise the words of
edgegw's reasons choose, and the plain Uncertain or Bad is the last resort.
"""

from __future__ import annotations

from functools import lru_cache

from asyncua import ua

GOOD = ua.StatusCode(ua.StatusCodes.Good)

# checked in order: the first group whose words occur in the reason (lower case) wins
_BAD_WORDS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("timeout", "did not answer", "timed out", "hanging"), ua.StatusCodes.BadTimeout),
    (
        ("offline", "cannot connect", "not connected", "connection", "disconnected", "refused to connect"),
        ua.StatusCodes.BadNoCommunication,
    ),
    (("nothing received yet", "not read"), ua.StatusCodes.BadWaitingForInitialData),
    (("outside", "out of range", "range of"), ua.StatusCodes.BadOutOfRange),
    (
        ("illegal data address", "address", "not permitted", "access", "optimized block", "no such"),
        ua.StatusCodes.BadConfigurationError,
    ),
    (
        (
            "malformed",
            "protocol error",
            "crc",
            "garbage",
            "not a valid",
            "is not a",
            "not an integer",
            "not a finite",
        ),
        ua.StatusCodes.BadCommunicationError,
    ),
    (("null",), ua.StatusCodes.BadNoData),
    (("internal error",), ua.StatusCodes.BadInternalError),
    (("exception", "device failure", "busy", "refused"), ua.StatusCodes.BadDeviceFailure),
)
_UNCERTAIN_WORDS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("outside range", "out of range"), ua.StatusCodes.UncertainEngineeringUnitsExceeded),
    (("last usable", "stale"), ua.StatusCodes.UncertainLastUsableValue),
)


def _named(reason: str, prefix: str) -> int | None:
    """The code of a reason that is an OPC UA status name with the right severity."""
    word = reason.split(maxsplit=1)[0] if reason else ""
    if word.startswith(prefix):
        code = getattr(ua.StatusCodes, word.rstrip(":,;"), None)
        if isinstance(code, int):
            return code
    return None


@lru_cache(maxsize=4096)
def status_code(quality: str, reason: str | None) -> ua.StatusCode:
    """The StatusCode of a reading (cached: a plant repeats a handful of reasons)."""
    if quality == "good":
        return GOOD
    text = reason or ""
    prefix = "Uncertain" if quality == "uncertain" else "Bad"
    named = _named(text, prefix)
    if named is not None:
        return ua.StatusCode(named)
    low = text.lower()
    for words, code in _UNCERTAIN_WORDS if quality == "uncertain" else _BAD_WORDS:
        if any(w in low for w in words):
            return ua.StatusCode(code)
    return ua.StatusCode(ua.StatusCodes.Uncertain if quality == "uncertain" else ua.StatusCodes.Bad)
