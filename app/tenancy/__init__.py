"""Tenants and their money: keys and JWT principals, the usage ledger, idempotency, rate
limits and budgets, the gateway that meters one call, the database and retention."""
