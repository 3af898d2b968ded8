"""Where one domain has a say in another's operation: every such hook, listed in one place.

A lower domain never imports a higher one (customers knows nothing of contracts; contracts
nothing of seats or tenants), yet their operations must consult them. The lower domain
declares the hook's type and asks this module for the hooks when it runs; this module
names them, importing their owners only when first asked (so no import cycle and no
registration by import side effect: whatever path calls the operation — HTTP, CLI, demo,
tests — gets the same hooks). docs/architecture.md, "Wiring", lists them.

    customer_delete_guards()   customers/service.delete        contracts: a customer with
                                                               contracts is kept
    amendment_guards()         contracts/amend.amend,          tenants: quotas must still
                               contracts/convert.convert       fit the amended limits
    amendment_effects()        contracts/amend.amend,          seats: an amendment that
                               contracts/convert.convert       puts members under the limit
                                                               ends the burst episode
    pointer_move_hooks()       policy/moves.publish,           releases: the release notes
                               policy/moves.rollback           of the move; alerts: a
                                                               publish's policy.published,
                                                               with those notes
    usage_read_guards()        usage/endpoints.get_usage      privacy: a range cutting an
                                                               hour whose raw events the
                                                               retention may have purged
                                                               is refused
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from allotment.contracts.amend import AmendmentEffect, AmendmentGuard
    from allotment.customers.service import DeleteGuard
    from allotment.policy.moves import PointerMoveHook
    from allotment.usage.reads import UsageReadGuard


@cache
def customer_delete_guards() -> tuple[DeleteGuard, ...]:
    from allotment.contracts.service import refuse_customer_delete

    return (refuse_customer_delete,)


@cache
def amendment_guards() -> tuple[AmendmentGuard, ...]:
    from allotment.tenants.service import quotas_still_fit

    return (quotas_still_fit,)


@cache
def amendment_effects() -> tuple[AmendmentEffect, ...]:
    from allotment.seats.service import end_burst_under_new_limit

    return (end_burst_under_new_limit,)


@cache
def pointer_move_hooks() -> tuple[PointerMoveHook, ...]:
    from allotment.alerts.published import announce_published
    from allotment.releases.service import record

    return (record, announce_published)  # in this order: the event carries the notes


@cache
def usage_read_guards() -> tuple[UsageReadGuard, ...]:
    from allotment.privacy.retention import refuse_purged_cuts

    return (refuse_purged_cuts,)
