"""Release notes (`releases.service.notes_for`) as a markdown document, in the words of
releases/notes.py (docs/release-notes.md). Pure.

    markdown(body) → str
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from allotment.releases.notes import limit_words, words


def markdown(body: Mapping[str, Any]) -> str:
    """The notes (`releases.service.notes_for`) as a markdown document."""
    version, previous = body["version"], body["previous_version"]
    if body["action"] == "rollback":
        title = f"# Policy version {version}: rolled back from version {previous}"
    else:
        title = f"# Policy version {version}: published" + (
            f" (after version {previous})" if previous is not None else ""
        )
    lines = [title, "", f"{body['at']} by {body['actor']}"]
    if body.get("approved_by"):
        lines[-1] += f", approved by {body['approved_by']}"
    lines.append("")
    if body.get("summary"):
        lines += [*(f"> {line}".rstrip() for line in body["summary"].splitlines()), ""]
    lines += ["## Changes", ""]
    lines += [f"- {_md(c['text'])}" for c in body["changes"]] or ["No change to the catalog."]
    impact = body["impact"]
    summary = impact["summary"]
    lines += [
        "",
        "## Impact",
        "",
        f"{_count(summary['customers_evaluated'], 'customer')} evaluated, "
        f"{summary['customers_affected']} affected, "
        f"{summary['customers_pinned']} pinned to a version (untouched).",
    ]
    if not impact["complete"]:
        lines.append("Only the first customers affected are listed; the counts cover all.")
    if impact["features"]:
        lines += ["", "### Features", ""]
        for f in impact["features"]:
            parts = []
            if f["gained_by"]:
                parts.append(f"gained by {_md(', '.join(f['gained_by']))}")
            if f["lost_by"]:
                parts.append(f"lost by {_md(', '.join(f['lost_by']))}")
            lines.append(f"- {_md(f['feature'])}: {'; '.join(parts)}")
    if impact["limits"]:
        plans = {c["customer"]: c.get("plan") for c in impact.get("customers", [])}
        lines += ["", "### Limits", ""]
        lines += [
            f"- {_md(c['customer'])}: {_md(limit_words(c['path'], plans.get(c['customer'])))} "
            f"{_md(words(c['old']))} → {_md(words(c['new']))}"
            for c in impact["limits"]
        ]
    if impact["invoices"]:
        lines += ["", "### Estimated invoice change this period", ""]
        lines += [
            f"- {_md(i['customer'])} ({i['contract']}): {_signed(i['estimated_invoice_change'])}"
            + (
                " (its plan is not in this version: not priced after the move)"
                if i.get("not_priced_after_the_move")
                else ""
            )
            for i in impact["invoices"]
        ]
    if impact["pinned"]:
        lines += ["", "### Pinned customers (untouched)", ""]
        lines += [f"- {_md(p)}" for p in impact["pinned"]]
    if body["orphaned"]:
        lines += ["", "## Contracts left behind", ""]
        for orphan in body["orphaned"]:
            for problem in orphan["problems"]:
                lines.append(
                    f"- {orphan['contract']} ({_md(orphan['customer'])}): "
                    f"{_code(problem['path'])}: {_md(problem['message'])}"
                )
    return "\n".join(lines) + "\n"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _code(path: str) -> str:
    """A path as a code span (paths are names, dots and brackets: never a backtick)."""
    return f"`{path}`"


def _signed(amount: str) -> str:
    return amount if amount.startswith("-") else f"+{amount}"


# An underscore inside a word (api_calls) is plain text to CommonMark; at a word's edge it
# could open emphasis.
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>#|]|(?<!\w)_|_(?!\w))")


def _md(text: str) -> str:
    """Text from documents and keys, escaped so it reads as itself in markdown."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))
