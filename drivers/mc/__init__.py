"""Mitsubishi MELSEC over the MC protocol (3E frame)."""
