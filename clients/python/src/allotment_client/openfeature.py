"""An OpenFeature provider on an `Allotment` client (the extra `openfeature`).

    from openfeature import api
    from allotment_client import Allotment
    from allotment_client.openfeature import AllotmentProvider

    api.set_provider(AllotmentProvider(Allotment(url, api_key=key, local=True)))
    flags = api.get_client()
    flags.get_boolean_value("sso", False, EvaluationContext("ann", {"customer": "acme"}))
    flags.get_integer_value("api.remaining", 0, EvaluationContext(attributes={"customer": "acme"}))

The context as OFREP reads it (docs/openfeature.md): `targetingKey` is the subject; `customer` is
required, `instance` and `tenant` are the check's, and every other attribute goes to the
rules' `context`. A feature is a boolean flag: `allowed`, variant `on`/`off`, reason
TARGETING_MATCH or DISABLED, metadata {reason, policy_version, decision_id}. A limit is an
integer flag, `<feature-or-meter>.limit` or `.remaining`, read from the customer's
artifact in local mode, else from its entitlements. Unknown features and limits are
FLAG_NOT_FOUND; a context without `customer` is INVALID_CONTEXT. Checks go through the
client, so local mode decides what its artifacts can.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import (
    FlagNotFoundError,
    GeneralError,
    InvalidContextError,
    TypeMismatchError,
)
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from allotment_client.client import Allotment
from allotment_client.errors import AllotmentError

LIMIT_FIELDS = ("limit", "remaining")
CHECK_KEYS = frozenset({"customer", "instance", "tenant"})
CUSTOMER_KEY = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
FEATURE_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


def _failure(exc: AllotmentError) -> Exception:
    """The OpenFeature error for a refused check: the context's fault (a 422 naming what
    came from it) is INVALID_CONTEXT, the rest GENERAL."""
    if exc.status == 422 and any(
        isinstance(e, Mapping) and e.get("path") != "feature" for e in exc.errors
    ):
        return InvalidContextError(str(exc))
    return GeneralError(str(exc))


class AllotmentProvider(AbstractProvider):
    def __init__(self, client: Allotment) -> None:
        super().__init__()
        self.client = client

    def get_metadata(self) -> Metadata:
        return Metadata(name="allotment")

    def shutdown(self) -> None:
        self.client.close()

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        customer, checks = _check_arguments(evaluation_context)
        if flag_key.rpartition(".")[2] in LIMIT_FIELDS and not FEATURE_NAME.fullmatch(flag_key):
            raise TypeMismatchError(f"{flag_key!r} is an integer flag (a limit)")
        try:
            decision = self.client.check(customer, flag_key, **checks)
        except AllotmentError as exc:
            raise _failure(exc) from exc
        if decision.reason == "feature_unknown":
            raise FlagNotFoundError(f"no feature {flag_key!r}")
        metadata: dict[str, bool | int | float | str] = {"reason": decision.reason}
        if decision.policy_version is not None:
            metadata["policy_version"] = decision.policy_version
        if decision.contract_revision is not None:
            metadata["contract_revision"] = decision.contract_revision
        if decision.decision_id is not None:
            metadata["decision_id"] = decision.decision_id
        return FlagResolutionDetails(
            value=decision.allowed,
            reason=Reason.TARGETING_MATCH if decision.allowed else Reason.DISABLED,
            variant="on" if decision.allowed else "off",
            flag_metadata=metadata,
        )

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        customer, _ = _check_arguments(evaluation_context)
        name, _, field = flag_key.rpartition(".")
        if field not in LIMIT_FIELDS or not name:
            if FEATURE_NAME.fullmatch(flag_key):
                raise TypeMismatchError(
                    f"{flag_key!r} is a boolean flag (a feature); an integer flag is "
                    "<feature-or-meter>.limit or .remaining"
                )
            raise FlagNotFoundError("an integer flag is <feature-or-meter>.limit or .remaining")
        try:
            meter = self._meter(customer, name)
        except AllotmentError as exc:
            raise _failure(exc) from exc
        value = meter.get(field) if meter is not None else None
        if meter is None or not isinstance(value, int | float):
            raise FlagNotFoundError(f"no limit {name!r} for {customer!r}")
        return FlagResolutionDetails(
            value=int(value), reason=Reason.TARGETING_MATCH, flag_metadata={"meter": name}
        )

    def _meter(self, customer: str, name: str) -> Mapping[str, Any] | None:
        if self.client.refresher is not None:
            artifact = self.client.artifact(customer)
            if artifact is not None:
                return artifact.meter(name)
        document = self.client.entitlements(customer)
        meters = (document.get("limits") or {}).get("meters") or {}
        for feature in document.get("features") or []:
            if feature.get("feature") == name and feature.get("meter"):
                name = feature["meter"]
        found = meters.get(name)
        return found if isinstance(found, Mapping) else None

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        raise TypeMismatchError("Allotment flags are booleans (features) or integers (limits)")

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        raise TypeMismatchError("Allotment flags are booleans (features) or integers (limits)")

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        raise TypeMismatchError("Allotment flags are booleans (features) or integers (limits)")


def _check_arguments(context: EvaluationContext | None) -> tuple[str, dict[str, Any]]:
    """The check's customer and keyword arguments from an evaluation context."""
    attributes = dict(context.attributes) if context is not None else {}
    customer = attributes.get("customer")
    if not isinstance(customer, str) or not customer:
        raise InvalidContextError("the context needs a `customer` attribute (its key)")
    if not CUSTOMER_KEY.fullmatch(customer):
        raise InvalidContextError(
            f"`customer` {customer!r} is not a customer key: a-z, 0-9, -_. (at most 64)"
        )
    checks: dict[str, Any] = {}
    if context is not None and context.targeting_key:
        checks["subject"] = context.targeting_key
    for name in ("instance", "tenant"):
        if isinstance(attributes.get(name), str):
            checks[name] = attributes[name]
    rest = {k: v for k, v in attributes.items() if k not in CHECK_KEYS}
    if rest:
        checks["context"] = rest
    return customer, checks
