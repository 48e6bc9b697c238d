"""The dictionary's types and units as OPC UA built-in types and EUInformation."""

from __future__ import annotations

from asyncua import ua

from ..config.units import UNECE_REC20

# (policy, mode) as the config writes them -> asyncua's endpoint type
SECURITY_POLICIES = {
    ("None", "None"): ua.SecurityPolicyType.NoSecurity,
    ("Basic256Sha256", "Sign"): ua.SecurityPolicyType.Basic256Sha256_Sign,
    ("Basic256Sha256", "SignAndEncrypt"): ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ("Aes128_Sha256_RsaOaep", "Sign"): ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"): ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ("Aes256_Sha256_RsaPss", "Sign"): ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ("Aes256_Sha256_RsaPss", "SignAndEncrypt"): ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
}

VARIANT_TYPES = {
    "bool": ua.VariantType.Boolean,
    "int8": ua.VariantType.SByte,
    "uint8": ua.VariantType.Byte,
    "int16": ua.VariantType.Int16,
    "uint16": ua.VariantType.UInt16,
    "int32": ua.VariantType.Int32,
    "uint32": ua.VariantType.UInt32,
    "int64": ua.VariantType.Int64,
    "uint64": ua.VariantType.UInt64,
    "float32": ua.VariantType.Float,
    "float64": ua.VariantType.Double,
    "string": ua.VariantType.String,
}


def eu_information(code: str) -> ua.EUInformation:
    """EngineeringUnits from a UNECE Rec 20 code (UnitId as OPC UA Part 8 derives it)."""
    unit_id = 0
    for ch in code.upper()[:3]:
        unit_id = (unit_id << 8) | ord(ch)
    symbol = UNECE_REC20.get(code, (code, code))
    info = ua.EUInformation()
    info.NamespaceUri = "http://www.opcfoundation.org/UA/units/un/cefact"
    info.UnitId = unit_id
    info.DisplayName = ua.LocalizedText(symbol[0])
    info.Description = ua.LocalizedText(symbol[1] if len(symbol) > 1 else symbol[0])
    return info
