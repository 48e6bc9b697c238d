"""`edgegw doctor -c FILE`: check a deployment before (or while) it runs.

One line per check: `ok`, `warn` or `FAIL`, what was found, and for anything not ok the fix.
The checks touch nothing: TCP connects that are closed at once, an MQTT CONNECT/DISCONNECT
with the configured credentials and a client id of its own (so a running gateway is not
kicked off the broker), a login at the identifier node, and read-only looks at serial ports,
the disk and the clock. Exit 0 when nothing failed, 1 otherwise, 2 for a bad config.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, LoadedConfig, load_config

# a clock before this is certainly wrong (the release is newer): no NTP, or a flat RTC battery
EARLIEST_SANE = time.mktime((2025, 1, 1, 0, 0, 0, 0, 0, -1))


@dataclass
class Verdict:
    state: str  # ok | warn | FAIL
    check: str
    found: str
    fix: str | None = None

    def line(self) -> str:
        text = f"{self.state:<5} {self.check:<22} {self.found}"
        if self.fix and self.state != "ok":
            text += f"\n      fix: {self.fix}"
        return text


def run(path: str, out: Callable[[str], None] = print, timeout: float = 3.0) -> int:
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            out(str(issue))
        out(
            Verdict(
                "FAIL",
                "config",
                f"{path}: {len(exc.issues)} error(s), listed above",
                "correct each FILE:LINE above; `edgegw validate -c FILE` checks again",
            ).line()
        )
        return 2
    verdicts = [_config(path, loaded)]
    out(verdicts[0].line())
    for check in (_data_dir, _disk, _api_port, _devices, _broker, _node, _clock):
        for v in check(loaded, timeout):
            verdicts.append(v)
            out(v.line())
    failed = sum(1 for v in verdicts if v.state == "FAIL")
    warned = sum(1 for v in verdicts if v.state == "warn")
    out(f"{len(verdicts)} checks: {failed} failed, {warned} warnings")
    return 1 if failed else 0


def _config(path: str, loaded: LoadedConfig) -> Verdict:
    points = sum(len(d.points) for d in loaded.devices)
    return Verdict("ok", "config", f"{path}: {len(loaded.devices)} devices, {points} points")


def _data_dir(loaded: LoadedConfig, _t: float) -> list[Verdict]:
    d = loaded.data_dir
    probe = d if d.exists() else next((p for p in d.parents if p.exists()), Path("/"))
    if not os.access(probe, os.W_OK | os.X_OK):
        return [
            Verdict(
                "FAIL",
                "data_dir",
                f"{d}: not writable by {_me()}",
                f"sudo install -d -o {_me()} -m 0750 {d}  (the service unit's StateDirectory does this)",
            )
        ]
    return [Verdict("ok", "data_dir", f"{d} writable" if d.exists() else f"{d} will be created")]


def _disk(loaded: LoadedConfig, _t: float) -> list[Verdict]:
    d = loaded.data_dir
    probe = d if d.exists() else next((p for p in d.parents if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    cfg = loaded.config
    queued = cfg.northbound.mqtt or cfg.northbound.influxdb or cfg.identifier  # what uses the queue
    cap = cfg.queue.max_bytes if queued is not None else 0
    queue = d / "queue.sqlite3"
    used = sum(f.stat().st_size for f in d.glob("queue.sqlite3*")) if queue.exists() else 0
    need = max(0, cap - used)
    found = f"{_mb(free)} free on {probe}; buffer cap {_mb(cap)}, queue now {_mb(used)}"
    if free < need:
        return [
            Verdict(
                "FAIL",
                "disk",
                found,
                f"free {_mb(need - free)} more on that disk, or lower queue.max_bytes",
            )
        ]
    if free < need + 1024**3:
        return [
            Verdict("warn", "disk", found + " (less than 1 GB to spare beyond the cap)", "free some space")
        ]
    return [Verdict("ok", "disk", found)]


def _api_port(loaded: LoadedConfig, _t: float) -> list[Verdict]:
    api = loaded.config.api
    if api is None or not api.listen:
        return []
    host, _, port = api.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, int(port)))
    except OSError as exc:
        return [
            Verdict(
                "warn",
                "api port",
                f"{api.listen}: cannot listen ({exc.strerror})",
                "fine if this gateway is running (`systemctl status edgegw`); otherwise another "
                "program holds the port (`ss -ltnp`): change api.listen",
            )
        ]
    return [Verdict("ok", "api port", f"{api.listen} free")]


def _devices(loaded: LoadedConfig, timeout: float) -> list[Verdict]:
    from edgegw.drivers.plugin import PortTarget, Probe, TcpTarget
    from edgegw.drivers.registry import plugin_for

    out: list[Verdict] = []
    checked: dict[object, Verdict] = {}
    for r in loaded.devices:
        dev = loaded.config.devices[r.index]
        name = f"device {dev.id}"
        plugin = plugin_for(dev.protocol)
        target = plugin.doctor_target(loaded, dev)
        if target is None:
            claim = plugin.bus_claim(loaded, dev)
            target = PortTarget(claim.port) if claim is not None else None
        if target is None:
            continue
        if target not in checked:
            if isinstance(target, TcpTarget):
                checked[target] = _tcp(name, target.host, target.port, timeout)
            else:
                checked[target] = _serial(name, target.path)
        v = checked[target]
        out.append(Verdict(v.state, name, v.found, v.fix))
        if v.state == "ok":
            # reachable: the plugin's own look at the protocol (identity, access rights)
            try:
                probes = asyncio.run(plugin.doctor_probe(loaded, dev, r.plan, timeout))
            except Exception as exc:  # a probe's bug must not end the other checks
                probes = [Probe("warn", f"the {plugin.name} probe failed: {exc!r}"[:200])]
            out += [Verdict(p.state, name, p.found, p.fix) for p in probes or ()]
    return out


def _tcp(name: str, host: str, port: int, timeout: float) -> Verdict:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError:
        return Verdict(
            "FAIL",
            name,
            f"{host}:{port}: no answer within {timeout:g}s",
            f"is the device powered and on this network? check cabling, VLAN and firewalls (`ping {host}`)",
        )
    except OSError as exc:
        why = exc.strerror or str(exc)
        fix = (
            f"the host answers but nothing listens on {port}: check the port and that the "
            "device's Modbus TCP / OPC UA server is enabled"
            if isinstance(exc, ConnectionRefusedError)
            else f"check the address {host} (DNS, routing: `ip route get {host}`)"
        )
        return Verdict("FAIL", name, f"{host}:{port}: {why}", fix)
    return Verdict("ok", name, f"{host}:{port} reachable")


def _serial(name: str, path: str) -> Verdict:
    if not os.path.exists(path):
        return Verdict(
            "FAIL",
            name,
            f"{path}: no such device",
            "plug the adapter in; `ls -l /dev/serial/by-id/` lists the ports by a stable name",
        )
    mode = os.stat(path).st_mode
    if not (stat.S_ISCHR(mode) or os.path.islink(path)):
        return Verdict("warn", name, f"{path}: not a character device", "check the port path")
    if not os.access(path, os.R_OK | os.W_OK):
        group = _group_of(path)
        return Verdict(
            "FAIL",
            name,
            f"{path}: {_me()} may not read and write it (group {group})",
            f"sudo usermod -aG {group} {_me()}, then restart the service (or log in again)",
        )
    return Verdict("ok", name, f"{path} present, read/write permitted")


def _broker(loaded: LoadedConfig, timeout: float) -> list[Verdict]:
    s = loaded.config.northbound.mqtt
    if s is None:
        return []
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    where = f"{s.host}:{s.port}" + (" (TLS)" if s.tls else "")
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"edgegw-doctor-{os.getpid()}",
        protocol=paho.MQTTv311,
    )
    if s.username:
        client.username_pw_set(s.username, s.password.get_secret_value() if s.password else None)
    if s.tls is not None:
        t = s.tls
        client.tls_set(
            ca_certs=str(loaded.relative(t.ca)) if t.ca else None,
            certfile=str(loaded.relative(t.cert)) if t.cert else None,
            keyfile=str(loaded.relative(t.key)) if t.key else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(t.insecure)
    answered = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        result["reason"] = reason
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(s.host, s.port, keepalive=10)
    except (OSError, ssl.SSLError) as exc:
        return [
            Verdict(
                "FAIL",
                "broker",
                f"{where}: {getattr(exc, 'strerror', None) or exc}",
                "check northbound.mqtt.host/port, that the broker runs and the firewall lets "
                "the PC through; for TLS, the CA file and the broker's host name",
            )
        ]
    client.loop_start()
    try:
        if not answered.wait(timeout):
            return [
                Verdict("FAIL", "broker", f"{where}: no CONNACK within {timeout:g}s", "is it an MQTT port?")
            ]
        reason = result["reason"]
        if reason.is_failure:
            return [
                Verdict(
                    "FAIL",
                    "broker",
                    f"{where}: refused ({reason})",
                    "check MQTT_USERNAME/MQTT_PASSWORD in the environment file against the "
                    "broker's password file and ACL",
                )
            ]
        user = f" as {s.username}" if s.username else " anonymously"
        return [Verdict("ok", "broker", f"{where}: connected{user}")]
    finally:
        client.disconnect()
        client.loop_stop()


def _node(loaded: LoadedConfig, timeout: float) -> list[Verdict]:
    ident = loaded.config.identifier
    if ident is None:
        return []
    from edgegw.identifier.client import NotFound, from_settings

    node = ident.node
    probe = f"{node.prefix}/edgegw-doctor-probe"

    async def check() -> Verdict:
        client = from_settings(node, loaded.relative)
        try:
            login = getattr(client, "login", None)
            if login is not None:
                await asyncio.wait_for(login(), timeout * 2)
            with contextlib.suppress(NotFound):  # reachable, logged in, the probe (rightly) absent
                await asyncio.wait_for(client.resolve(probe), timeout * 2)
            user = node.app_handle if node.kind == "idhub" else node.username
            who = f" as {user}" if user else ""
            return Verdict("ok", "identifier node", f"{node.url} ({node.kind}): logged in{who}")
        except TimeoutError:
            return Verdict(
                "FAIL",
                "identifier node",
                f"{node.url}: no answer within {timeout * 2:g}s",
                "check url and firewall",
            )
        except Exception as exc:  # Transient, Rejected …: the message is the finding
            return Verdict(
                "FAIL",
                "identifier node",
                f"{node.url} ({node.kind}): {exc}",
                "check identifier.node.url, and username/password (environment file) with the node's operator",
            )
        finally:
            close = getattr(client, "close", None)
            if close is not None:
                await close()

    return [asyncio.run(check())]


def _clock(_loaded: LoadedConfig, _t: float) -> list[Verdict]:
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(now))
    if now < EARLIEST_SANE:
        return [
            Verdict(
                "FAIL",
                "clock",
                f"{stamp}: before this release; every timestamp would be wrong",
                "set up NTP (chrony or systemd-timesyncd) against the plant's time server",
            )
        ]
    synced = _ntp_synchronised()
    if synced is False:
        return [
            Verdict(
                "warn",
                "clock",
                f"{stamp}: not synchronised (timedatectl)",
                "enable NTP: `timedatectl set-ntp true` or chrony with the plant's time server",
            )
        ]
    detail = "synchronised" if synced else "synchronisation unknown (timedatectl did not say)"
    return [Verdict("ok", "clock", f"{stamp}, {detail}")]


def _ntp_synchronised() -> bool | None:
    if shutil.which("timedatectl") is None:
        return None
    try:
        r = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=3,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = r.stdout.strip()
    return None if r.returncode != 0 or value not in ("yes", "no") else value == "yes"


def _me() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _group_of(path: str) -> str:
    gid = os.stat(path).st_gid
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _mb(n: float) -> str:
    return f"{n / 1024**2:,.0f} MB"
