import pytest
from edgegw.drivers.modbus.address import AddressError, ModbusAddress, parse_address


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("hr:100", ModbusAddress("hr", 100)),
        ("ir:0", ModbusAddress("ir", 0)),
        ("co:7", ModbusAddress("co", 7)),
        ("di:65535", ModbusAddress("di", 65535)),
        ("hr:5.15", ModbusAddress("hr", 5, 15)),
        (40101, ModbusAddress("hr", 100)),
        ("40001", ModbusAddress("hr", 0)),
        (30001, ModbusAddress("ir", 0)),
        ("10010", ModbusAddress("di", 9)),
        ("00001", ModbusAddress("co", 0)),
        (400001, ModbusAddress("hr", 0)),
        (465536, ModbusAddress("hr", 65535)),
        ("40011.3", ModbusAddress("hr", 10, 3)),
    ],
)
def test_accepted_forms(raw, expected):
    assert parse_address(raw) == expected


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("hx:1", "not a Modbus address"),
        ("hr:5.16", "outside 0..15"),
        ("co:3.1", "not to coils"),
        (1, "quote coil references"),
        ("40000", "start at 1"),
        ("hr:70000", "above 65535"),
        ("20001", "not a Modbus address"),
        (True, "expected an address"),
    ],
)
def test_rejected_forms(raw, fragment):
    with pytest.raises(AddressError, match=fragment):
        parse_address(raw)
