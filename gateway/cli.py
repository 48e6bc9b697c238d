"""The `edgegw` command. Exit codes: 0 ok, 1 runtime failure, 2 bad config or arguments."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from typing import TYPE_CHECKING, NoReturn

from . import __version__

if TYPE_CHECKING:
    from .config import LoadedConfig


def _load(path: str) -> LoadedConfig:
    from .config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        n = len(exc.issues)
        print(f"{path}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_validate(args: argparse.Namespace) -> int:
    from edgegw.drivers.registry import plugin_for

    loaded = _load(args.config)
    cfg = loaded.config
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    points = 0
    requests: Counter[tuple[str, str]] = Counter()
    rows = []
    for resolved in loaded.devices:
        dev = cfg.devices[resolved.index]
        plugin = plugin_for(dev.protocol)
        points += len(resolved.points)
        n_req = ""
        n = plugin.requests_per_poll(dev, resolved.read_points, resolved.plan)
        if n is not None:
            requests[plugin.name, plugin.summary_unit] += n
            n_req = f"{n} request{'s' if n != 1 else ''}/poll"
        rows.append(
            (dev.id, dev.protocol, dev.model or "-", len(resolved.points), f"{dev.poll.interval:g}s", n_req)
        )
    print(f"{args.config}: ok")
    print(f"gateway {cfg.gateway.id}: {len(cfg.devices)} devices, {points} points, {len(cfg.models)} models")
    if rows:
        widths = [max(len(str(r[i])) for r in rows) for i in range(6)]
        for r in rows[:40]:
            print("  " + "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
        if len(rows) > 40:
            print(f"  … and {len(rows) - 40} more devices")
    for (name, unit), n in requests.items():
        if n:
            print(f"{name}: {n} {unit} per poll cycle")
    return 0


def cmd_schema(_args: argparse.Namespace) -> int:
    from .config.schema import GatewayConfig

    print(json.dumps(GatewayConfig.model_json_schema(), indent=2, ensure_ascii=False))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from . import logs, runtime

    loaded = _load(args.config)
    logs.setup(args.log_level or loaded.config.gateway.log_level)
    try:
        with asyncio.Runner(loop_factory=runtime.event_loop_factory()) as runner:
            return runner.run(runtime.run(loaded))
    except OSError as exc:
        print(
            f"edgegw: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return 1


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor

    return doctor.run(args.config, timeout=args.timeout)


def cmd_reload(args: argparse.Namespace) -> int:
    import errno
    import fcntl
    import os
    import signal

    from .runtime import LOCK_FILE

    loaded = _load(args.config)  # a config with errors is refused here, before the gateway sees it
    lock = loaded.data_dir / LOCK_FILE
    try:
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = int(f.read().strip() or 0)
            else:
                pid = 0  # nobody holds the lock: no gateway is running
    except (OSError, ValueError):
        pid = 0
    if pid <= 0:
        print(f"edgegw: no edgegw is running with data_dir {loaded.data_dir}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        why = "permission denied" if exc.errno == errno.EPERM else os.strerror(exc.errno or 0)
        print(f"edgegw: cannot signal edgegw (pid {pid}): {why}", file=sys.stderr)
        return 1
    print(f"reload requested: edgegw pid {pid} re-reads {loaded.path} (see its log for the outcome)")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from edgegw.simulators import runner

    from . import logs

    logs.setup("info")
    logging.getLogger("edgegw.simulate").setLevel(logging.INFO)
    templates = Path(args.templates) if args.templates else None
    if args.idnode:
        if args.port is None:
            print("edgegw: --idnode needs --port", file=sys.stderr)
            return 2
        user, _, password = args.user.partition(":")
        args.prefix = args.prefix or ["88.118.8"]
        apps = {}
        for spec_ in args.app:
            handle, eq, key = spec_.partition("=")
            if not eq or not handle or not key:
                print(f"edgegw: --app {spec_!r}: write APP_HANDLE=KEY.pem", file=sys.stderr)
                return 2
            apps[handle] = Path(key)
        spec = runner.IdNodeSpec(
            args.bind,
            args.port,
            {user: (password, tuple(args.prefix))},
            templates or runner.DEFAULT_TEMPLATES,
            apps=apps,
        )
        loaded = _load(args.config) if args.config else None
        return asyncio.run(runner.run(loaded, args.bind, args.control, args.period, spec))
    if not args.config:
        print("edgegw: simulate needs -c FILE (or --idnode --port N)", file=sys.stderr)
        return 2
    loaded = _load(args.config)
    from_config = runner.idnode_from_config(loaded, templates, args.bind)
    return asyncio.run(runner.run(loaded, args.bind, args.control, args.period, from_config))


def cmd_id(args: argparse.Namespace) -> int:
    from . import idcli

    return idcli.cmd_id(args, _load)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # exit 2 with one line, as argparse does, plus usage
        self.print_usage(sys.stderr)
        print(f"edgegw: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edgegw", description="Industrial-internet edge gateway")
    p.add_argument("--version", action="version", version=f"edgegw {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run the gateway in the foreground")
    r.add_argument("-c", "--config", required=True)
    r.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check a config without touching devices")
    v.add_argument("-c", "--config", required=True)
    v.set_defaults(func=cmd_validate)

    from . import idcli

    idcli.add_parser(sub, cmd_id)

    from edgegw.drivers.registry import plugins

    for plugin in plugins():  # protocol commands: browse and certs (OPC UA)
        plugin.add_commands(sub, _load)

    dr = sub.add_parser(
        "doctor", help="check a deployment: config, ports, serial permissions, broker, node, disk, clock"
    )
    dr.add_argument("-c", "--config", required=True)
    dr.add_argument("--timeout", type=float, default=3.0, help="per network check, seconds")
    dr.set_defaults(func=cmd_doctor)
    rl = sub.add_parser("reload", help="make the running gateway apply its changed config (SIGHUP)")
    rl.add_argument("-c", "--config", required=True)
    rl.set_defaults(func=cmd_reload)

    s = sub.add_parser("schema", help="print the config's JSON Schema")
    s.set_defaults(func=cmd_schema)

    m = sub.add_parser("simulate", help="simulate every device of a config, and its secondary node")
    m.add_argument("-c", "--config")
    m.add_argument("--bind", default="127.0.0.1", help="address the simulators listen on")
    m.add_argument("--control", metavar="HOST:PORT", help="serve the fault-injection API here")
    m.add_argument("--period", type=float, default=60.0, help="seconds per value cycle")
    m.add_argument("--idnode", action="store_true", help="serve a secondary-node simulator on --port")
    m.add_argument("--port", type=int, help="port of the secondary-node simulator (with --idnode)")
    m.add_argument("--prefix", action="append", default=None, help="enterprise prefix it serves (repeatable)")
    m.add_argument("--user", default="edgegw:edgegw", help="USER:PASSWORD allowed to log in")
    m.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="APP_HANDLE=KEY.pem",
        help="IDHub app allowed to log in by challenge-response, with its public (or private) key (repeatable)",
    )
    m.add_argument(
        "--templates", help="YAML file of templates to seed (default configs/identifier/templates.yaml)"
    )
    m.set_defaults(func=cmd_simulate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `edgegw validate … | head`: the reader left, nothing to report
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
