"""Dashtam: async financial-data aggregation API."""
