"""From a loaded config to driver objects: the one place that knows both sides."""

from __future__ import annotations

from edgegw.drivers.base import Driver
from edgegw.drivers.modbus.codec import RegisterPoint
from edgegw.drivers.modbus.rtu import ModbusRtuDriver, SerialBus
from edgegw.drivers.modbus.tcp import ModbusTcpDriver
from edgegw.drivers.opcua.driver import (
    OpcuaDriver,
    OpcuaPoint,
    Security,
    SubscriptionSettings,
    UserCertificate,
)
from edgegw.drivers.opcua.pki import Pki, application_uri
from edgegw.drivers.serial.driver import SerialLineDriver
from edgegw.drivers.serial.framing import Framer
from edgegw.drivers.serial.lines import LineParser
from edgegw.drivers.serial.port import unescape

from .config import LoadedConfig
from .config.checks import ResolvedDevice
from .config.schema import (
    ModbusRtuDevice,
    ModbusTcpDevice,
    OpcuaDevice,
    OpcuaSecurity,
    SerialDevice,
    SerialLine,
)


def register_points(dev: ModbusTcpDevice | ModbusRtuDevice, resolved: ResolvedDevice) -> list[RegisterPoint]:
    out = []
    for e in resolved.points:
        a = resolved.addresses[e.id]
        out.append(
            RegisterPoint(
                id=e.id,
                area=a.area,
                offset=a.offset,
                type=e.type,
                bit=a.bit,
                length=e.length,
                byte_order=e.byte_order or dev.byte_order,
            )
        )
    return out


def build_driver(loaded: LoadedConfig, resolved: ResolvedDevice) -> Driver:
    dev = loaded.config.devices[resolved.index]
    if isinstance(dev, ModbusTcpDevice | ModbusRtuDevice):
        c = dev.connection
        plan = (
            register_points(dev, resolved),
            dev.planner.max_registers,
            dev.planner.max_bits,
            dev.planner.max_gap,
        )
        if isinstance(dev, ModbusTcpDevice):
            return ModbusTcpDriver(dev.connection.host, dev.connection.port, c.unit_id, c.timeout, *plan)
        line = dev.connection
        bus = SerialBus.for_port(loaded.port_path(line.port), line_settings(line), line.inter_frame or 0.0)
        return ModbusRtuDriver(bus, c.unit_id, c.timeout, *plan)
    if isinstance(dev, SerialDevice):
        f = dev.framing
        return SerialLineDriver(
            dev.id,
            loaded.port_path(dev.connection.port),
            line_settings(dev.connection),
            framer(dev),
            LineParser([(e.id, e.type) for e in resolved.points], f.pattern, f.encoding),
            request=unescape(dev.request) if dev.mode == "poll" and dev.request else None,
            timeout=dev.connection.timeout,
            partial_timeout=f.partial_timeout,
            idle_timeout=dev.idle_timeout,
        )
    if isinstance(dev, OpcuaDevice):
        c = dev.connection
        s = dev.subscription
        return OpcuaDriver(
            dev.id,
            c.endpoint,
            [OpcuaPoint(e.id, e.opcua or "", e.type) for e in resolved.points],
            timeout=c.timeout,
            subscribe=(
                SubscriptionSettings(
                    dev.poll.interval, s.sampling_interval, s.queue_size, s.deadband, s.deadband_type
                )
                if dev.mode == "subscribe"
                else None
            ),
            username=c.username,
            password=c.password.get_secret_value() if c.password else None,
            security=opcua_security(loaded, c.security),
            user_certificate=(
                UserCertificate(loaded.relative(c.user_certificate), loaded.relative(c.user_private_key))
                if c.user_certificate and c.user_private_key
                else None
            ),
        )
    raise ValueError(f"no driver for protocol {dev.protocol}")


def opcua_security(loaded: LoadedConfig, sec: OpcuaSecurity | None) -> Security | None:
    if sec is None:
        return None
    store = Pki(loaded.data_dir / "pki")
    own = sec.certificate is None
    return Security(
        sec.policy,
        sec.mode,
        store.certificate if own else loaded.relative(sec.certificate or ""),
        store.private_key if own else loaded.relative(sec.private_key or ""),
        store,
        loaded.relative(sec.server_certificate) if sec.server_certificate else None,
        application_uri(loaded.config.gateway.id),
        create=own,
    )


def line_settings(line: SerialLine) -> tuple[int, int, str, float]:
    return (line.baudrate, line.bytesize, line.parity, float(line.stopbits))


def framer(dev: SerialDevice) -> Framer:
    f = dev.framing
    return Framer(
        terminator=unescape(f.terminator) if f.terminator else None,
        length=f.length,
        start=unescape(f.start) if f.start else None,
        end=unescape(f.end) if f.end else None,
        max_frame=f.max_line,
    )
