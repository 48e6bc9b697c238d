"""Southbound protocol drivers. A driver knows its protocol only: it never imports a sink."""
