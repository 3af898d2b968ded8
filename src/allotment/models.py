"""Imports every domain's models so `Base.metadata` is complete (Alembic, tests)."""

from __future__ import annotations


def load_all() -> None:
    from allotment.alerts import models as _alerts  # noqa: F401
    from allotment.audit import models as _audit  # noqa: F401
    from allotment.auth import models as _auth  # noqa: F401
    from allotment.check import decisions as _decisions  # noqa: F401
    from allotment.contracts import models as _contracts  # noqa: F401
    from allotment.credits import models as _credits  # noqa: F401
    from allotment.customers import models as _customers  # noqa: F401
    from allotment.instances import models as _instances  # noqa: F401
    from allotment.kit import idempotency as _idempotency  # noqa: F401
    from allotment.policy import models as _policy  # noqa: F401
    from allotment.portal import models as _portal  # noqa: F401
    from allotment.releases import models as _releases  # noqa: F401
    from allotment.seats import models as _seats  # noqa: F401
    from allotment.signing import models as _signing  # noqa: F401
    from allotment.tenants import models as _tenants  # noqa: F401
    from allotment.usage import models as _usage  # noqa: F401
    from allotment.webhooks import models as _webhooks  # noqa: F401
