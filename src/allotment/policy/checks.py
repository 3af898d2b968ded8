"""Whole-document checks: references, cycles, inheritance, tiers and rules, each with a path.

These run on the raw document next to the model validation, so one pass reports every
error: a section that is malformed somewhere is still checked everywhere else. Values the
models already reject (a name that breaks the syntax, a list that is not a list) are
skipped here rather than reported twice.

    check                                  path of the error
    feature requires an unknown feature    features.sso.requires[0]
    feature meters an unknown meter        features.api.meter
    dependency cycle                       features.a.requires     (a -> b -> a)
    meter property missing / superfluous   meters.api_calls.property
    corrections on a meter that is no sum  meters.peak_jobs.corrections
    percentile on average / unique_count   meters.storage.percentile
    filter does not compile / reads        meters.windows_hosts.filter
      another name than `data`
    multiplier on a unique_count meter     meters.users.multiplier
    plan extends an unknown plan           plans.enterprise.extends
    inheritance cycle                      plans.a.extends         (a -> b -> a)
    plan names an unknown feature          plans.team.features[2]
    +name / -name without extends          plans.team.features[2]
    removes what the parent lacks          plans.enterprise.features[1]
    limit / price for an unknown meter     plans.team.limits.foo, plans.team.price.meters.foo
    limit on a level (average, percentile) plans.team.limits.storage
    price: tiers, alternatives, modes,     plans.team.price.meters.api_calls.tiers[1].up_to
    priced kinds (price_checks.py)
    required after inheritance             plans.team.seats.limit, ...seats.burst.window
    burst on a concurrent pool (resolved)  plans.floating.seats.burst   (new documents only)
    bought quantities, devices per seat    see licensing.py
    add-on names an unknown feature        addons.audit_pack.features[0]
    add-on pricing and allowances          addons.maintenance.of[0]   (addon_checks.py)
    rule names an unknown feature          rules[0].feature
    rule does not compile / unknown name   rules[0].when
    price lists, yearly meters             (term_checks.py)
    usage surges, repeated percentages     alerts.usage_surge.foo  (alert_checks.py)
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from typing import Any, TypeGuard

from pydantic import ValidationError

from allotment.policy import licensing
from allotment.policy.addon_checks import check_priced_addons
from allotment.policy.alert_checks import check_alerts
from allotment.policy.document import PlanSpec
from allotment.policy.graph import describe_cycle, find_cycles
from allotment.policy.inheritance import ResolvedPlan, resolve_plans, split_entry
from allotment.policy.meter_filter import filter_problems
from allotment.policy.paths import Location
from allotment.policy.price_checks import check_written as check_written_price
from allotment.policy.price_checks import price_gaps
from allotment.policy.rules import RULE_VARIABLES, compile_condition, unknown_variables
from allotment.policy.spec import FEATURE_ENTRY_PATTERN, NAME_PATTERN
from allotment.policy.term_checks import check_addon_terms, check_plan_terms, resolved_terms

Finding = tuple[Location, str]

PROPERTY_AGGREGATIONS = ("sum", "max", "unique_count", "average")
AGGREGATIONS = ("count", *PROPERTY_AGGREGATIONS)
PERCENTILE_AGGREGATIONS = ("count", "sum", "max")
_NAME = re.compile(NAME_PATTERN)
_ENTRY = re.compile(FEATURE_ENTRY_PATTERN)


def check_document(raw: Mapping[str, Any], *, stored: bool = False) -> list[Finding]:
    """Every cross-reference and whole-document problem in `raw`, in document order.

    `stored`: `raw` is a version the service already holds; refusals added after versions
    were stored (a burst on a concurrent pool) are skipped, so a stricter release never
    makes a live catalog unloadable (the compiler drops what they refuse).
    """
    features = _section(raw, "features")
    meters = _section(raw, "meters")
    plans = _section(raw, "plans")
    feature_names = set(features)
    meter_names = set(meters)
    return [
        *_check_features(features, feature_names=feature_names, meter_names=meter_names),
        *_check_meters(meters),
        *_check_plans(
            plans,
            feature_names=feature_names,
            meter_names=meter_names,
            levels=level_meters(meters),
            stored=stored,
        ),
        *(
            finding
            for name, spec in plans.items()
            if isinstance(spec, Mapping)
            for finding in check_plan_terms(name, spec, currency=raw.get("currency"), meters=meters)
        ),
        *_check_addons(_section(raw, "addons"), feature_names=feature_names),
        *(
            finding
            for name, spec in _section(raw, "addons").items()
            if isinstance(spec, Mapping)
            for finding in check_addon_terms(name, spec, currency=raw.get("currency"))
        ),
        *check_priced_addons(
            _section(raw, "addons"),
            meter_names=meter_names,
            levels=level_meters(meters),
            plans=plans,
        ),
        *_check_rules(raw.get("rules"), feature_names=feature_names),
        *check_alerts(raw.get("alerts"), meter_names=meter_names, levels=level_meters(meters)),
    ]


def _section(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    section = raw.get(key)
    if not isinstance(section, Mapping):
        return {}
    return {name: value for name, value in section.items() if isinstance(name, str)}


def _is_name(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def _unknown(kind: str, name: str, known: set[str]) -> str:
    message = f"unknown {kind} '{name}'"
    close = difflib.get_close_matches(name, sorted(known), n=1)
    if close:
        return f"{message} (did you mean '{close[0]}'?)"
    if not known:
        other = " other" if kind == "plan" else ""  # a plan cannot extend itself
        return f"{message}: the document defines no{other} {kind}s"
    return message


def _names(value: object) -> Iterator[tuple[int, str]]:
    """The well-formed names in a list, with their indices."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            if _is_name(item):
                yield index, item


def _check_features(
    features: dict[str, Any], *, feature_names: set[str], meter_names: set[str]
) -> Iterator[Finding]:
    graph: dict[str, list[str]] = {}
    for name, spec in features.items():
        if not isinstance(spec, Mapping):
            continue
        graph[name] = []
        for index, dependency in _names(spec.get("requires")):
            graph[name].append(dependency)
            if dependency not in feature_names:
                yield (
                    ("features", name, "requires", index),
                    _unknown("feature", dependency, feature_names),
                )
        meter = spec.get("meter")
        if _is_name(meter) and meter not in meter_names:
            yield ("features", name, "meter"), _unknown("meter", meter, meter_names)
    for cycle in find_cycles(graph):
        yield ("features", cycle[0], "requires"), f"dependency cycle: {describe_cycle(cycle)}"


def _check_meters(meters: dict[str, Any]) -> Iterator[Finding]:
    for name, spec in meters.items():
        if not isinstance(spec, Mapping):
            continue
        aggregation = spec.get("aggregation")
        has_property = spec.get("property") is not None
        if aggregation in PROPERTY_AGGREGATIONS and not has_property:
            yield (
                ("meters", name, "property"),
                f"required: aggregation '{aggregation}' reads a property of each event's data",
            )
        elif aggregation == "count" and has_property:
            yield (
                ("meters", name, "property"),
                "not allowed: aggregation 'count' counts events and reads no property",
            )
        if spec.get("corrections") is True and aggregation in AGGREGATIONS and aggregation != "sum":
            yield (
                ("meters", name, "corrections"),
                f"only a 'sum' meter takes corrections (negative quantities); "
                f"aggregation '{aggregation}' does not",
            )
        percentile = spec.get("percentile")
        if (
            percentile is not None
            and aggregation in AGGREGATIONS
            and aggregation not in PERCENTILE_AGGREGATIONS
        ):
            yield (
                ("meters", name, "percentile"),
                f"a percentile is of hourly values, which only 'count', 'sum' and 'max' meters "
                f"have; aggregation '{aggregation}' does not",
            )
        source = spec.get("filter")
        if isinstance(source, str) and source:
            for message in filter_problems(source):
                yield ("meters", name, "filter"), message
        if spec.get("multiplier") is not None and aggregation == "unique_count":
            yield (
                ("meters", name, "multiplier"),
                "a 'unique_count' meter counts distinct values; a multiplier does not apply",
            )


def level_meters(meters: Mapping[str, Any]) -> set[str]:
    """The meters whose value is a level (an average, a percentile), not a use that adds up:
    they take no usage limit, and rules do not read them (docs/usage.md)."""
    return {
        name
        for name, spec in meters.items()
        if isinstance(spec, Mapping)
        and (spec.get("aggregation") == "average" or spec.get("percentile") is not None)
    }


def _check_plans(
    plans: dict[str, Any],
    *,
    feature_names: set[str],
    meter_names: set[str],
    levels: set[str],
    stored: bool,
) -> Iterator[Finding]:
    parents: dict[str, list[str]] = {}
    for name, spec in plans.items():
        if not isinstance(spec, Mapping):
            continue
        parent = spec.get("extends")
        if _is_name(parent):
            parents[name] = [parent]
            if parent not in plans:
                yield ("plans", name, "extends"), _unknown("plan", parent, set(plans) - {name})
        yield from _check_feature_entries(
            name, spec.get("features"), extends=parent is not None, feature_names=feature_names
        )
        limits = spec.get("limits")
        if isinstance(limits, Mapping):
            for meter in limits:
                if _is_name(meter) and meter not in meter_names:
                    yield ("plans", name, "limits", meter), _unknown("meter", meter, meter_names)
                elif meter in levels:
                    yield (
                        ("plans", name, "limits", meter),
                        (
                            f"meter '{meter}' is a level (an average or a percentile of hourly "
                            "values), not a use that adds up over a period: it takes no usage "
                            "limit. Price it, or limit a count or sum meter instead"
                        ),
                    )
        price = spec.get("price")
        meter_prices = price.get("meters") if isinstance(price, Mapping) else None
        if isinstance(meter_prices, Mapping):
            for meter in meter_prices:
                location: Location = ("plans", name, "price", "meters", meter)
                if _is_name(meter) and meter not in meter_names:
                    yield location, _unknown("meter", meter, meter_names)
        yield from check_written_price(price, location=("plans", name, "price"))
    for cycle in find_cycles(parents):
        yield ("plans", cycle[0], "extends"), f"inheritance cycle: {describe_cycle(cycle)}"
    yield from _check_resolved(plans, stored=stored)


def _check_feature_entries(
    plan: str, entries: object, *, extends: bool, feature_names: set[str]
) -> Iterator[Finding]:
    if not isinstance(entries, list):
        return
    added: set[str] = set()
    removed: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, str) or not _ENTRY.fullmatch(entry):
            continue
        location: Location = ("plans", plan, "features", index)
        sign, name = split_entry(entry)
        if name not in feature_names:
            yield location, _unknown("feature", name, feature_names)
        if sign and not extends:
            yield (
                location,
                f"'{entry}' changes an inherited list, but plan '{plan}' does not extend "
                f"another plan: write '{name}'",
            )
        if (sign == "-" and name in added) or (sign != "-" and name in removed):
            yield location, f"'{name}' is both added and removed"
        (removed if sign == "-" else added).add(name)


def _check_resolved(plans: dict[str, Any], *, stored: bool) -> Iterator[Finding]:
    """Checks that need inheritance resolved, for the plans whose whole chain is well-formed."""
    specs: dict[str, PlanSpec] = {}
    for name, raw_plan in plans.items():
        try:
            specs[name] = PlanSpec.model_validate(raw_plan)
        except ValidationError:
            continue  # already reported by the model validation
    resolved = resolve_plans(specs, skip_broken=True)
    for name in sorted(resolved):
        plan = resolved[name]
        spec = specs[name]
        parent = resolved.get(spec.extends) if spec.extends else None
        if parent is not None:
            for index, entry in enumerate(spec.features or ()):
                sign, feature = split_entry(entry)
                if sign == "-" and feature not in parent.features:
                    yield (
                        ("plans", name, "features", index),
                        f"removes '{feature}', which plan '{parent.name}' does not include",
                    )
        inherited = set(_gaps(parent)) if parent is not None else set()
        hint = " (set it here or in a plan it extends)" if parent is not None else ""
        for relative, message in _gaps(plan):
            # A gap the parent has too is reported once, on the parent that owns it.
            if (relative, message) not in inherited:
                yield ("plans", name, *relative), message + hint
        if not stored and _concurrent_burst(plan) and not (parent and _concurrent_burst(parent)):
            yield ("plans", name, "seats", "burst"), _concurrent_burst_message(spec, parent)
        yield from licensing.problems(name, plan, parent)  # bought quantities, devices


def _concurrent_burst(plan: ResolvedPlan) -> bool:
    """A concurrent seat pool with a burst above 0 after inheritance (docs/seats.md)."""
    seats = plan.settings.get("seats")
    if not isinstance(seats, Mapping) or seats.get("model") != "concurrent":
        return False
    burst = seats.get("burst")
    extra = burst.get("extra") if isinstance(burst, Mapping) else None
    return isinstance(extra, int) and extra > 0


def _concurrent_burst_message(spec: PlanSpec, parent: ResolvedPlan | None) -> str:
    written = spec.seats is not None and spec.seats.burst is not None
    where = "" if written or parent is None else f" (inherited from plan '{parent.name}')"
    return (
        f"concurrent (floating) seats have no burst{where}: a session is refused once the "
        "pool is full, never let over the limit; remove the burst, or write burst: {extra: 0}"
    )


def _gaps(plan: ResolvedPlan) -> Iterator[Finding]:
    """Fields a resolved plan must have once the blocks that need them are present."""
    settings = plan.settings
    seats = settings.get("seats")
    if isinstance(seats, Mapping):
        if seats.get("limit") is None:
            yield ("seats", "limit"), "required: the number of seats in the pool"
        burst = seats.get("burst")
        if isinstance(burst, Mapping):
            extra = burst.get("extra") or 0
            if extra > 0 and burst.get("window") is None:
                yield (
                    ("seats", "burst", "window"),
                    f"required when burst.extra is above 0 (it is {extra})",
                )
    instances = settings.get("instances")
    if isinstance(instances, Mapping) and instances.get("limit") is None:
        yield ("instances", "limit"), "required: the total instance weight allowed"
    limits = settings.get("limits")
    if isinstance(limits, Mapping):
        for meter, limit in limits.items():
            if isinstance(limit, Mapping) and limit.get("limit") is None:
                yield ("limits", meter, "limit"), "required: the units allowed per period"
    yield from price_gaps(settings)
    yield from resolved_terms(settings)


def _check_addons(addons: dict[str, Any], *, feature_names: set[str]) -> Iterator[Finding]:
    for name, spec in addons.items():
        if not isinstance(spec, Mapping):
            continue
        for index, feature in _names(spec.get("features")):
            if feature not in feature_names:
                yield (
                    ("addons", name, "features", index),
                    _unknown("feature", feature, feature_names),
                )


def _check_rules(rules: object, *, feature_names: set[str]) -> Iterator[Finding]:
    if not isinstance(rules, list):
        return
    for index, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            continue
        feature = rule.get("feature")
        if _is_name(feature) and feature not in feature_names:
            yield ("rules", index, "feature"), _unknown("feature", feature, feature_names)
        source = rule.get("when")
        if not isinstance(source, str) or not source:
            continue
        try:
            program = compile_condition(source)
        except ValueError as exc:
            yield ("rules", index, "when"), f"CEL does not compile: {exc}"
            continue
        strangers = unknown_variables(program)
        if strangers:
            yield (
                ("rules", index, "when"),
                f"unknown variable{'s' if len(strangers) > 1 else ''} "
                f"{', '.join(repr(name) for name in strangers)}; "
                f"rules may read {', '.join(RULE_VARIABLES)}",
            )
