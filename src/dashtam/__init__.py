"""Dashtam: async financial-data aggregation API."""

__version__ = "0.1.0"
