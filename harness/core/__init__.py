"""Foundations every layer may use: config schema, ledger, stage store, claims, data, statistics. Imports only core."""
