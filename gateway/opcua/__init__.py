"""What the OPC UA driver and the OPC UA server share: the gateway's application certificate
and trust list (pki), and the dictionary's types and units as OPC UA sees them (types)."""
