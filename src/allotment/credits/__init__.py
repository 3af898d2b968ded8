"""Prepaid credit wallets: grants and top-ups, their balance and drawdown (docs/billing.md,
"Credit wallets")."""
