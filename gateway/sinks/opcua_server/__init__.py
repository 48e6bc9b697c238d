"""The OPC UA server sink: every collected point served to SCADA and MES (DESIGN §5b)."""

from .sink import OpcuaServerSink, create

__all__ = ["OpcuaServerSink", "create"]
