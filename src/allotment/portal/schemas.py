from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class PortalLinkRead(BaseModel):
    url: str = Field(
        description="The one-time link: opened once, before expires_at, it signs the browser "
        "into the customer's portal. Hand it to the customer; it is not shown again."
    )
    expires_at: datetime
