"""The credits gate (evaluator step 8, after the meter gate): a metered feature whose line
a prepaid wallet pays is denied `credits_exhausted` once the wallet is spent, when the plan
says `price.credits.enforce` (docs/check.md, "credits_exhausted").

Pure: the wallet comes with the request (check/credit_use.py reads it, at most once per
customer state and `ttl_s`), its balance is finished here with the request's meter use.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from allotment.billing.credit_balance import MonthWallet
from allotment.check.values import CheckRequest, Snapshot, Usage, Verdict
from allotment.policy.catalog import Feature
from allotment.policy.money import format_amount

_ZERO = Decimal(0)


def wallet_balance(wallet: MonthWallet, usage: Usage | None, now: datetime) -> Decimal:
    """`wallet`'s balance at `now`, its paid meters' month totals read from `usage`."""
    return wallet.balance(lambda meter: usage.of(meter).month if usage is not None else _ZERO, now)


def balance(request: CheckRequest, now: datetime) -> Decimal | None:
    """The request's wallet's balance at `now` with its use; None without a wallet."""
    if request.wallet is None:
        return None
    return wallet_balance(request.wallet, request.usage, now)


def credits(
    snapshot: Snapshot, request: CheckRequest, feature: Feature, now: datetime
) -> Verdict | None:
    wallet = request.wallet
    if wallet is None or not wallet.enforce or feature.meter is None:
        return None
    if not wallet.pays(feature.meter):
        return None
    left = balance(request, now)
    if left is None or left > 0:
        return None
    return Verdict(
        False,
        "credits_exhausted",
        detail=f"the prepaid credits that pay for '{feature.meter}' are spent (balance "
        f"{format_amount(left)} {wallet.currency}); a top-up restores '{feature.name}'",
    )
