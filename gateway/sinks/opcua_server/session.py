"""Sessions of edgegw's OPC UA server: who may do what, in which language, and writes.

asyncua's InternalSession serves the address space as stored. edgegw's sessions add three
things the contract asks for (DESIGN §5b):
- the language: ActivateSession's LocaleIds pick the DisplayName and Description that Read and
  Browse answer for edgegw's nodes (the first listed language the dictionary has; en otherwise);
- writes to a point go through the gateway's write path (the HTTP API's checks, the device
  runner, the log), and the device's answer becomes the write's StatusCode: BadUserAccessDenied
  for a read user, BadNotWritable for an ro point, BadOutOfRange for a value outside the range
  or the raw type, BadTypeMismatch for a value of the wrong kind, BadTimeout and
  BadDeviceFailure when the device does not take it;
- user identities: exactly the configured users (and anonymous sessions only with
  `anonymous: read`), passwords compared in constant time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_session import InternalSession
from edgegw.drivers.base import WriteFailed, WriteTimeout

from ...logs import RateLimited
from ...writeback import WriteRejected
from .space import ServedPoint, Texts

log = logging.getLogger("edgegw.opcua_server")
_TEXT_ATTRS = (ua.AttributeIds.DisplayName, ua.AttributeIds.Description)
_refusals = RateLimited(log, 60.0)  # one key: user names are what a client sends


class Users:
    """asyncua's user manager: username/password pairs with their access, and anonymous."""

    def __init__(self, passwords: dict[str, tuple[str, str]], anonymous: bool):
        self.passwords = passwords  # username -> (password, access)
        self.anonymous = anonymous

    def access(self, user: User | None) -> str:
        if user is None or user.role is UserRole.Admin:
            return "write" if user is not None else "read"
        if user.name is None:
            return "read"  # anonymous
        entry = self.passwords.get(user.name)
        return entry[1] if entry else "read"

    def get_user(
        self, iserver: Any, username: str | None = None, password: Any = None, certificate: Any = None
    ) -> User | None:
        if username is not None:
            if isinstance(password, bytes):
                password = password.decode("utf-8", "replace")
            entry = self.passwords.get(username)
            if (
                entry is not None
                and isinstance(password, str)
                and hmac.compare_digest(entry[0].encode(), password.encode())
            ):
                return User(role=UserRole.User, name=username)
            _refusals.log(
                "login",
                logging.WARNING,
                "OPC UA session refused: wrong user name or password",
                user=username[:64],
            )
            return None
        if self.anonymous:
            return User(role=UserRole.User, name=None)
        return None


# (device, point, value, who) -> the gateway's checked write, run on the gateway's loop
Writer = Callable[[str, str, object, str], Coroutine[Any, Any, object]]


@dataclasses.dataclass
class Served:
    """What the sessions need from the sink, shared and updated by the server's thread."""

    texts: dict[ua.NodeId, Texts]
    points: dict[ua.NodeId, tuple[str, ServedPoint]]  # node -> (device, point)
    users: Users
    write: Writer
    gateway_loop: asyncio.AbstractEventLoop
    write_timeout: float = 30.0


def _language(locales: tuple[str, ...], available: dict[str, ua.LocalizedText]) -> str:
    for wanted in locales:
        if wanted in available:
            return wanted
        lang = wanted.split("-", 1)[0].lower()
        for key in available:
            if key.split("-", 1)[0].lower() == lang:
                return key
    return "en"


def write_status(exc: BaseException) -> int:
    """A refused or failed write as the StatusCode the client gets."""
    if isinstance(exc, WriteRejected):
        if exc.kind == "unknown":
            return ua.StatusCodes.BadNodeIdUnknown
        if exc.kind in ("read_only", "disabled"):
            return ua.StatusCodes.BadNotWritable
        if "range" in exc.reason or "does not fit" in exc.reason or "longer than" in exc.reason:
            return ua.StatusCodes.BadOutOfRange
        return ua.StatusCodes.BadTypeMismatch
    if isinstance(exc, WriteTimeout | TimeoutError):
        return ua.StatusCodes.BadTimeout
    if isinstance(exc, WriteFailed):
        return ua.StatusCodes.BadDeviceFailure
    return ua.StatusCodes.BadInternalError


def session_class(served: Served) -> type[InternalSession]:
    class EdgeSession(InternalSession):
        locales: tuple[str, ...] = ()

        def activate_session(
            self, params: ua.ActivateSessionParameters, peer_certificate: bytes | None
        ) -> Any:
            result = super().activate_session(params, peer_certificate)
            self.locales = tuple(str(x) for x in (params.LocaleIds or []))
            return result

        async def read(self, params: ua.ReadParameters) -> list[ua.DataValue]:
            results = await super().read(params)
            if self.locales:
                for i, rv in enumerate(params.NodesToRead):
                    if rv.AttributeId in _TEXT_ATTRS:
                        t = served.texts.get(rv.NodeId)
                        if t is not None:
                            texts = (
                                t.display if rv.AttributeId == ua.AttributeIds.DisplayName else t.description
                            )
                            lang = _language(self.locales, texts)
                            if lang != "en" and i < len(results):
                                results[i] = ua.DataValue(
                                    ua.Variant(texts[lang], ua.VariantType.LocalizedText)
                                )
            return results

        async def browse(self, params: ua.BrowseParameters) -> list[ua.BrowseResult]:
            results = await super().browse(params)
            if self.locales:
                for r in results:
                    refs = r.References or []
                    for j, ref in enumerate(refs):
                        t = served.texts.get(ref.NodeId)
                        if t is not None:
                            lang = _language(self.locales, t.display)
                            if lang != "en":
                                # the stored references are shared by every session: a copy
                                refs[j] = dataclasses.replace(ref, DisplayName=t.display[lang])
            return results

        async def write(self, params: ua.WriteParameters) -> list[ua.StatusCode]:
            ours = [i for i, wv in enumerate(params.NodesToWrite) if wv.NodeId in served.points]
            if not ours:
                return await super().write(params)
            results: list[ua.StatusCode | None] = [None] * len(params.NodesToWrite)
            mine = set(ours)
            rest = [wv for i, wv in enumerate(params.NodesToWrite) if i not in mine]
            if rest:
                others = iter(await super().write(ua.WriteParameters(NodesToWrite=rest)))
                for i in range(len(results)):
                    if i not in mine:
                        results[i] = next(others)
            done = await asyncio.gather(*(self._write_point(params.NodesToWrite[i]) for i in ours))
            for i, code in zip(ours, done, strict=True):
                results[i] = ua.StatusCode(code)
            return [r if r is not None else ua.StatusCode(ua.StatusCodes.BadInternalError) for r in results]

        async def _write_point(self, wv: ua.WriteValue) -> int:
            target = served.points.get(wv.NodeId)
            if target is None or wv.AttributeId != ua.AttributeIds.Value:
                return ua.StatusCodes.BadNotWritable
            if served.users.access(self.user) != "write":
                return ua.StatusCodes.BadUserAccessDenied
            device, point = target
            if point.entry.access != "rw":
                return ua.StatusCodes.BadNotWritable
            if wv.IndexRange:
                return ua.StatusCodes.BadWriteNotSupported
            variant = wv.Value.Value if wv.Value is not None else None
            value = variant.Value if variant is not None else None
            if value is None or isinstance(value, list | bytes):
                return ua.StatusCodes.BadTypeMismatch
            who = self.user.name if self.user is not None and self.user.name else "anonymous"
            fut = asyncio.run_coroutine_threadsafe(
                served.write(device, point.entry.id, value, who), served.gateway_loop
            )
            try:
                await asyncio.wait_for(asyncio.wrap_future(fut), served.write_timeout)
            except TimeoutError:
                fut.cancel()
                return ua.StatusCodes.BadTimeout
            except Exception as exc:  # the gateway's refusal or the device's answer
                return write_status(exc)
            return ua.StatusCodes.Good

    return EdgeSession
