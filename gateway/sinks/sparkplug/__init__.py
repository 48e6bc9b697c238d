"""Sparkplug B sink: an edge node (spBv1.0) on the durable queue."""
