"""Serial line-protocol instruments: scales, barcode/RFID readers, gauges printing ASCII lines."""
