"""Loading a config: YAML with a source map -> one pydantic schema -> cross-key checks."""

from __future__ import annotations

import contextlib
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any

from edgegw.drivers.registry import protocols
from edgegw.identifier.rules import check_node_files
from pydantic import BaseModel, TypeAdapter, ValidationError

from .checks import ResolvedDevice, check
from .schema import Device, GatewayConfig, Model, Northbound, QueueSettings
from .source import ConfigError, ConfigIssue, Path_, SourceMap, load_document

_MODEL = TypeAdapter(Model)
_DEVICE: TypeAdapter[Any] = TypeAdapter(Device)

__all__ = ["ConfigError", "ConfigIssue", "LoadedConfig", "load_config"]


@dataclass(slots=True)
class LoadedConfig:
    path: Path
    config: GatewayConfig
    devices: list[ResolvedDevice]
    source: SourceMap
    warnings: list[ConfigIssue] = field(default_factory=list)  # deprecated keys: still work, say so

    @property
    def gateway_id(self) -> str:
        return self.config.gateway.id

    @property
    def data_dir(self) -> Path:
        d = Path(self.config.gateway.data_dir)
        return d if d.is_absolute() else (self.path.parent / d).resolve()

    def relative(self, name: str) -> Path:
        """A file named in the config, relative to the config file's folder."""
        p = Path(name)
        return p if p.is_absolute() else (self.path.parent / p)

    def port_path(self, name: str) -> str:
        """A serial port as the config names it, relative to the config file's folder, with
        symbolic links kept (a /dev/serial/by-id name is the point of naming it so)."""
        return os.path.normpath(self.relative(name))


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> LoadedConfig:
    """Load and check a config, raising ConfigError with every problem found."""
    doc, smap, issues = load_document(path, env)
    if issues and not doc:
        raise ConfigError(issues)
    issues += _passwords_from_env(doc, smap)
    try:
        cfg = GatewayConfig.model_validate(doc)
        valid = list(enumerate(cfg.devices))
    except ValidationError as exc:
        issues += _issues_from(exc, doc, smap)
        # Validate the parts on their own so that cross-key checks still run on every part
        # that is well-formed: one run reports every error.
        parts, valid, bad_models = _partial(doc)
        if parts is None:
            raise ConfigError(issues) from None
        devices, problems = check(parts, valid, bad_models)
        issues += _located(problems, smap)
        raise ConfigError(issues) from None
    devices, problems = check(cfg, valid, set())
    problems += check_node_files(cfg, Path(path).parent)
    issues += _located(problems, smap)
    warnings, queue_problems = _queue_settings(cfg, smap)
    issues += queue_problems
    if issues:
        raise ConfigError(issues)
    return LoadedConfig(Path(path), cfg, devices, smap, warnings)


_QUEUE_KEYS = ("max_bytes", "fsync", "commit_interval")
_MQTT_KEYS = ("inflight", "replay", "replay_rate")


def _queue_settings(cfg: GatewayConfig, smap: SourceMap) -> tuple[list[ConfigIssue], list[ConfigIssue]]:
    """`northbound.mqtt.buffer` is the old place of `queue:` and of the MQTT delivery keys: its
    keys move where they now live, with a warning; given beside their new place, an error."""
    mq = cfg.northbound.mqtt
    if mq is None or mq.buffer is None:
        return [], []
    where: Path_ = ("northbound", "mqtt", "buffer")
    given = mq.buffer.model_fields_set
    clash = [k for k in _QUEUE_KEYS if k in given and "queue" in cfg.model_fields_set] + [
        k for k in _MQTT_KEYS if k in given and k in mq.model_fields_set
    ]
    if clash:
        return [], [
            smap.issue(
                (*where, k),
                f"also given in its new place ({'queue' if k in _QUEUE_KEYS else 'northbound.mqtt'}.{k}): keep one",
            )
            for k in clash
        ]
    if "queue" not in cfg.model_fields_set:  # the values were validated where they were written
        cfg.queue = QueueSettings().model_copy(
            update={k: getattr(mq.buffer, k) for k in _QUEUE_KEYS if k in given}
        )
    for k in _MQTT_KEYS:
        if k in given:
            setattr(mq, k, getattr(mq.buffer, k))
    moved = ", ".join(
        [f"{k} to queue.{k}" for k in _QUEUE_KEYS if k in given]
        + [f"{k} to northbound.mqtt.{k}" for k in _MQTT_KEYS if k in given]
    )
    return [
        smap.issue(
            where, f"deprecated: move {moved or 'its keys'}; buffer: will be refused in a later version"
        )
    ], []


def _passwords_from_env(doc: Any, smap: SourceMap) -> list[ConfigIssue]:
    """The OPC UA server's user passwords come from the environment, never from the file
    (checked on the document, so that the schema's errors are reported beside it)."""
    server = doc.get("northbound") if isinstance(doc, dict) else None
    server = server.get("opcua_server") if isinstance(server, dict) else None
    users = server.get("users") if isinstance(server, dict) else None
    out = []
    for i, user in enumerate(users if isinstance(users, list) else []):
        path: Path_ = ("northbound", "opcua_server", "users", i, "password")
        if isinstance(user, dict) and isinstance(user.get("password"), str) and path not in smap.secret_paths:
            out.append(smap.issue(path, "write the password as ${NAME}: it comes from the environment only"))
    return out


def _located(problems: list[tuple[Path_, str]], smap: SourceMap) -> list[ConfigIssue]:
    """Problems as issues, leaving out those about values already reported as unreadable."""
    return [smap.issue(p, m) for p, m in problems if not smap.covers(p)]


def _partial(doc: Any) -> tuple[GatewayConfig | None, list[tuple[int, Any]], set[str]]:
    if not isinstance(doc, dict):
        return None, [], set()
    models: dict[str, Any] = {}
    bad_models: set[str] = set()
    for key, raw in (doc.get("models") or {}).items() if isinstance(doc.get("models"), dict) else ():
        try:
            models[key] = _MODEL.validate_python(raw)
        except ValidationError:
            bad_models.add(key)
    devices: list[tuple[int, Any]] = []
    raw_devices: list[Any] = doc["devices"] if isinstance(doc.get("devices"), list) else []
    for i, raw in enumerate(raw_devices):
        with contextlib.suppress(ValidationError):
            devices.append((i, _DEVICE.validate_python(raw)))
    cfg = GatewayConfig.model_construct(  # type: ignore[call-arg]  # no gateway: the checks don't use it
        models=models, devices=[d for _, d in devices], northbound=Northbound(), identifier=None, api=None
    )
    return cfg, devices, bad_models


def _issues_from(exc: ValidationError, doc: Any, smap: SourceMap) -> list[ConfigIssue]:
    merged: dict[Path_, list[str]] = {}
    for err in exc.errors(include_url=False):
        path = _data_path(err["loc"], doc)
        if err["type"] != "extra_forbidden" and smap.covers(path):
            continue  # the value was reported as unreadable where it was written
        if err["type"] == "union_tag_invalid" and smap.covers((*path, "protocol")):
            continue
        if err["type"] == "union_tag_not_found":  # the discriminator key is missing: name it
            path = (*path, str(err.get("ctx", {}).get("discriminator", "")).strip("'"))
        merged.setdefault(path, [])
        msg = _message(err, path, doc)
        if msg not in merged[path]:
            merged[path].append(msg)
    return [smap.issue(p, "; or ".join(msgs)) for p, msgs in merged.items()]


def _data_path(loc: tuple[Any, ...], doc: Any) -> Path_:
    """Drop the parts of a pydantic location that are not in the document (union branches,
    discriminator tags, validator names)."""
    out: list[str | int] = []
    cur = doc
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(cur, dict):
            if part in cur:
                out.append(part)
                cur = cur[part]
                continue
            if last and isinstance(part, str) and not _looks_like_branch(part):
                out.append(part)  # a missing or unknown key
            continue
        if isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
            continue
        # scalar or a branch name below it: stop descending
    return tuple(out)


def _looks_like_branch(part: str) -> bool:
    return (
        "[" in part
        or part in {"str", "int", "float", "bool", "dict", "list", "tuple", "none"}
        or part in protocols()
    )


def _message(err: Any, path: Path_, doc: Any) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_not_found":
        names = protocols()
        return f"required key is missing: {', '.join(names[:-1])} or {names[-1]}"
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else "?"
        allowed = _allowed_keys(path[:-1], doc)
        hint = difflib.get_close_matches(key, allowed, n=1)
        if hint:
            return f"unknown key '{key}'; did you mean '{hint[0]}'?"
        return f"unknown key '{key}'" + (f"; expected one of: {', '.join(allowed)}" if allowed else "")
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if "input" in err and kind not in ("model_type", "dict_type", "list_type"):
        value = err["input"]
        short = isinstance(value, str | int | float) and not isinstance(value, bool) and len(str(value)) < 60
        if short and f"'{value}'" not in msg and str(value) not in msg:
            msg = f"{msg} (got {value!r})"
    return msg[0].lower() + msg[1:] if msg else msg


def _allowed_keys(path: Path_, doc: Any) -> list[str]:
    """The keys the schema accepts at a path of the document."""
    model: Any = GatewayConfig
    cur = doc
    for part in path:
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and isinstance(part, int):
            cur = cur[part]
        else:
            cur = None
        model = _child_type(model, part, cur)
        if model is None:
            return []
    model = _pick_model(model, cur)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _child_type(model: Any, part: str | int, value: Any) -> Any:
    model = _pick_model(model, value)
    if isinstance(model, type) and issubclass(model, BaseModel):
        field = model.model_fields.get(str(part))
        return field.annotation if field else None
    origin = typing.get_origin(model)
    args = typing.get_args(model)
    if origin is list and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def _pick_model(model: Any, value: Any) -> Any:
    """Resolve Optional/Annotated/union to the model that applies to this value."""
    for _ in range(6):
        origin = typing.get_origin(model)
        if origin is typing.Annotated:
            model = typing.get_args(model)[0]
            continue
        if origin in (typing.Union, UnionType):
            options = [a for a in typing.get_args(model) if a is not type(None)]
            chosen = options[0] if options else None
            if isinstance(value, dict) and "protocol" in value:
                for opt in options:
                    fields = getattr(opt, "model_fields", {})
                    if "protocol" in fields and value["protocol"] in typing.get_args(
                        fields["protocol"].annotation
                    ):
                        chosen = opt
            else:
                for opt in options:
                    if isinstance(opt, type) and issubclass(opt, BaseModel):
                        chosen = opt
                        break
            model = chosen
            continue
        break
    return model
