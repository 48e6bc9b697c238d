"""What every plugin on a serial port needs: why a port cannot be opened, in words an engineer
can act on, and bytes from a config string.

Shared by the plugins on serial ports (Modbus RTU through pymodbus' serial client, line-protocol
instruments through pyserial): it sits beside drivers/base.py, not in one plugin's folder.
"""

from __future__ import annotations

import codecs
import errno
import os
import termios


def port_problem(port: str) -> str | None:
    """Why `port` cannot be opened before even trying, or None."""
    if not os.path.exists(port):
        return f"serial port {port} not found (adapter unplugged, or a different name)"
    if not os.access(port, os.R_OK | os.W_OK):
        return f"permission denied on {port} (add the gateway's user to the dialout group)"
    return None


def open_failure(exc: BaseException) -> str:
    """The tail of a 'cannot open serial port' message for the exception raised by opening."""
    args: tuple[object, ...] = getattr(exc, "args", ())
    if isinstance(exc, termios.error) and len(args) == 2:
        return f": {str(args[1]).lower()} (the port refuses this line setting)"
    if len(args) == 2 and isinstance(args[0], int):  # pyserial: SerialException(errno, text)
        if args[0] in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
            return ": it is in use by another program (a second gateway, or a terminal left open)"
        return f": {os.strerror(args[0]).lower()}"
    return f": {exc}" if str(exc) else ""


def line_setting(settings: tuple[int, int, str, float]) -> str:
    baudrate, bytesize, parity, stopbits = settings
    return f"{baudrate} {bytesize}{parity}{stopbits:g}"


def unescape(text: str) -> bytes:
    r"""Bytes from a config string, with C escapes: `\r\n`, `\x02`, `\t`, `\\`. A YAML
    double-quoted string has already turned them into characters; a single-quoted or plain one
    still holds the backslashes, and both mean the same here."""
    if "\\" in text:
        text = codecs.decode(text.encode("latin-1", "backslashreplace"), "unicode_escape")
    return text.encode("latin-1")
