"""Offline analysis: reads sessions, computes tables and verdicts, renders reports."""
