"""Experiments: policies side by side on live traffic, with honest statistics.

Pure parts, no I/O: sticky assignment of members to variants (:mod:`.assignment`) and the
per-variant results with member-level intervals, always-valid p-values and a sample-ratio
check (:mod:`.statistics`).
"""
