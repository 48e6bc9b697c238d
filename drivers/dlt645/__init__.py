"""DL/T 645-2007 energy meters on RS-485 (`protocol: dlt645`)."""
