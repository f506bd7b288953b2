"""CallOnAlarm's table in a site: the connection whose contacts are called for it."""

from dataclasses import dataclass
from typing import Any, Final

from app.domain.site_tables import TableSchema, Text
from vendors.base import SiteTable


@dataclass(frozen=True, slots=True)
class CallOnAlarmSite:
    """The CallOnAlarm connection whose contacts are called for this site."""

    account_number: str


class CallOnAlarmSiteSchema(TableSchema):
    """``[sites.<key>.callonalarm]``."""

    account_number = Text(required=True, example='a string like "CA-1001"', max_length=64)

    def make(self, data: dict[str, Any]) -> CallOnAlarmSite:
        return CallOnAlarmSite(**data)


TABLE: Final = SiteTable(name="callonalarm", type=CallOnAlarmSite, schema=CallOnAlarmSiteSchema)
