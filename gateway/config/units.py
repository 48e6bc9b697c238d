"""Common unit codes of UN/ECE Recommendation No. 20 (Revision 17), with their symbols.

Only the codes a plant floor actually uses are listed; the full recommendation has ~2,000.
A point's `unit` must be one of these codes; the symbol is what dashboards display.
"""

from __future__ import annotations

# code: (symbol, English name)
UNECE_REC20: dict[str, tuple[str, str]] = {
    # temperature
    "CEL": ("°C", "degree Celsius"),
    "KEL": ("K", "kelvin"),
    "FAH": ("°F", "degree Fahrenheit"),
    # pressure
    "PAL": ("Pa", "pascal"),
    "KPA": ("kPa", "kilopascal"),
    "MPA": ("MPa", "megapascal"),
    "BAR": ("bar", "bar"),
    "MBR": ("mbar", "millibar"),
    "PS": ("psi", "pound-force per square inch"),
    # electrical
    "VLT": ("V", "volt"),
    "KVT": ("kV", "kilovolt"),
    "AMP": ("A", "ampere"),
    "4K": ("mA", "milliampere"),
    "WTT": ("W", "watt"),
    "KWT": ("kW", "kilowatt"),
    "MAW": ("MW", "megawatt"),
    "D46": ("V·A", "volt - ampere"),
    "KVA": ("kV·A", "kilovolt - ampere"),
    "KVR": ("kvar", "kilovar"),
    "WHR": ("W·h", "watt hour"),
    "KWH": ("kW·h", "kilowatt hour"),
    "MWH": ("MW·h", "megawatt hour"),
    "OHM": ("Ω", "ohm"),
    "HTZ": ("Hz", "hertz"),
    "KHZ": ("kHz", "kilohertz"),
    "JOU": ("J", "joule"),
    "KJO": ("kJ", "kilojoule"),
    # time
    "C26": ("ms", "millisecond"),
    "SEC": ("s", "second"),
    "MIN": ("min", "minute [unit of time]"),
    "HUR": ("h", "hour"),
    "DAY": ("d", "day"),
    # rotation, speed
    "RPM": ("r/min", "revolutions per minute"),
    "MTS": ("m/s", "metre per second"),
    "KMH": ("km/h", "kilometre per hour"),
    "C16": ("mm/s", "millimetre per second"),
    "H81": ("mm/min", "millimetre per minute"),
    # length, area, volume
    "MMT": ("mm", "millimetre"),
    "CMT": ("cm", "centimetre"),
    "MTR": ("m", "metre"),
    "MTK": ("m²", "square metre"),
    "MTQ": ("m³", "cubic metre"),
    "LTR": ("l", "litre"),
    # flow
    "MQH": ("m³/h", "cubic metre per hour"),
    "MQS": ("m³/s", "cubic metre per second"),
    "L2": ("l/min", "litre per minute"),
    "E32": ("l/h", "litre per hour"),
    "KGS": ("kg/s", "kilogram per second"),
    # mass, force, torque, density
    "GRM": ("g", "gram"),
    "KGM": ("kg", "kilogram"),
    "TNE": ("t", "tonne (metric ton)"),
    "NEW": ("N", "newton"),
    "KNT": ("kN", "kilonewton"),
    "NU": ("N·m", "newton metre"),
    "KMQ": ("kg/m³", "kilogram per cubic metre"),
    # ratios, counts, misc
    "P1": ("%", "percent"),
    "59": ("ppm", "part per million"),
    "C62": ("1", "one"),
    "H87": ("pce", "piece"),
    "DD": ("°", "degree [unit of angle]"),
    "2N": ("dB", "decibel"),
    "LUX": ("lx", "lux"),
}


def unit_symbol(code: str | None) -> str | None:
    if code is None:
        return None
    entry = UNECE_REC20.get(code)
    return entry[0] if entry else None
