"""The usage dashboard's core (issue 17): queries, daily rollups, sessions, SVG charts and CSV, no Flask.

The web pages live in nodes/dashboard.py; everything they show is computed here, from the ledger
and the rollups of its completed days, so the numbers are the usage endpoint's numbers.
"""
