"""Credit wallets on the invoice, pure: what a month's lines ask of the wallet, and the
`credits` line that shows what it paid (docs/billing.md, "Credit wallets").

    applies(code, patterns)                 a line code matches an exact code or a `prefix*`
    month_charge(lines, applies_to, ...)    → MonthCharge: the applicable lines, net of their
                                            group's trial credit or discount, never more than
                                            the subtotal
    credits_line(ledger, ref, ...)          → Line | None: minus what the wallet paid for
                                            `ref`, each grant drawn, the balance after

No I/O, no clock reads; exact (Fraction between, each amount rounded once half-even).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from allotment.billing.measure import ZERO, money
from allotment.billing.priced import Line
from allotment.billing.wallet import Ledger
from allotment.policy.catalog import DEFAULT_CREDITS_APPLY_TO
from allotment.policy.money import format_amount

CODE = "credits"


def applies(code: str, patterns: Sequence[str]) -> bool:
    return any(
        code.startswith(pattern[:-1]) if pattern.endswith("*") else code == pattern
        for pattern in patterns
    )


@dataclass(frozen=True)
class MonthCharge:
    amount: Decimal  # ≥ 0, in the minor unit
    lines: tuple[str, ...]  # the codes of the lines it pays, in invoice order


def _rate(lines: Sequence[Line]) -> Fraction:
    """The group's adjustment as a rate: −1 for a trial's credit, −p/100 for a discount."""
    for line in lines:
        if line.code == "credit:trial" or line.code.startswith("discount:"):
            return Fraction(line.unit_price)
    return ZERO


def month_charge(
    lines: Sequence[Line],
    applies_to: Callable[[str], Sequence[str] | None],
    *,
    subtotal: Decimal,
    minor_digits: int,
) -> MonthCharge:
    """What the wallet is asked to pay for a month's `lines`: per group (lines sharing their
    source's start and end), the applicable lines' sum × (1 + the group's adjustment rate);
    the total rounded once, and never above the subtotal. `applies_to(group start)` gives the
    group's plan's patterns (None: the default)."""
    groups: dict[tuple[str, str], list[Line]] = {}
    for line in lines:
        key = (str(line.source.get("start", "")), str(line.source.get("end", "")))
        groups.setdefault(key, []).append(line)
    total = ZERO
    codes: list[str] = []
    for (start, _), group in groups.items():
        patterns = applies_to(start) or DEFAULT_CREDITS_APPLY_TO
        paid = [line for line in group if line.amount > 0 and applies(line.code, patterns)]
        applicable = sum((Fraction(line.amount) for line in paid), ZERO)
        total += applicable * (1 + _rate(group))
        codes.extend(line.code for line in paid if line.code not in codes)
    amount = min(money(max(ZERO, total), minor_digits), max(Decimal(0), subtotal))
    return MonthCharge(amount, tuple(codes) if amount > 0 else ())


def credits_line(
    ledger: Ledger,
    ref: str,
    *,
    charge: MonthCharge,
    kinds: Mapping[str, str],
    currency: str,
    minor_digits: int,
) -> Line | None:
    """The invoice's `credits` line for the charge `ref`: minus what the wallet paid for it,
    with each grant drawn and the balance left at the ledger's instant. None when nothing
    was asked of the wallet."""
    if charge.amount == 0:
        return None
    draws = [d for d in ledger.draws if d.charge == ref]

    def shown(amount: Decimal) -> str:  # in the minor unit, as every amount on an invoice
        return format_amount(money(Fraction(amount), minor_digits))

    paid = money(sum((Fraction(d.amount) for d in draws), ZERO), minor_digits)
    return Line(
        code=CODE,
        description=f"prepaid credits: {format_amount(paid)} of {format_amount(charge.amount)} "
        f"from {len(draws)} grant{'s' if len(draws) != 1 else ''}",
        quantity=paid,
        unit=currency,
        unit_price=Decimal(-1),
        amount=-paid,
        source={
            "charged": shown(charge.amount),
            "lines": list(charge.lines),
            "grants": [
                {"grant": d.grant, "kind": kinds.get(d.grant), "amount": shown(d.amount)}
                for d in draws
            ],
            "uncovered": shown(ledger.uncovered.get(ref, Decimal(0))),
            "balance_after": shown(ledger.balance),
        },
    )
