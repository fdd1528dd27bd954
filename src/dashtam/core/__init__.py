"""Foundations every other layer builds on: settings, database, security, crypto, errors."""
