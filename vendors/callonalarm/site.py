"""CallOnAlarm's table in a site: the connection whose contacts are called for it, and the language
its calls are spoken in."""

from dataclasses import dataclass
from typing import Any, Final

from app.domain.site_tables import TableSchema, Text, one_of, show
from vendors.base import SiteTable

# The voice languages of a CallOnAlarm account (seed 001, the trigger answer's ``language``).
LANGUAGES: Final = ("en", "fr", "es", "it", "de")
# The bridge writes its own messages in English; an account declared in another language is sent none.
ENGLISH: Final = "en"
_LANGUAGE_LIST = ", ".join(f'"{code}"' for code in LANGUAGES)


@dataclass(frozen=True, slots=True)
class CallOnAlarmSite:
    """The CallOnAlarm connection whose contacts are called for this site.

    ``language`` is the account's voice language as set in CallOnAlarm (Dashboard -> Settings ->
    Account). The trigger's ``message`` overrides the account's default voice message and is read by
    that language's voice, so the bridge's English text is sent only to an English account.
    """

    account_number: str
    language: str = ENGLISH


class CallOnAlarmSiteSchema(TableSchema):
    """``[sites.<key>.callonalarm]``."""

    account_number = Text(required=True, example='a string like "CA-1001"', max_length=64)
    language = Text(
        example='a language code like "fr"',
        max_length=8,
        validate=one_of(LANGUAGES, lambda value: f"{show(value)} is not one of {_LANGUAGE_LIST}"),
    )

    def make(self, data: dict[str, Any]) -> CallOnAlarmSite:
        return CallOnAlarmSite(**data)


TABLE: Final = SiteTable(name="callonalarm", type=CallOnAlarmSite, schema=CallOnAlarmSiteSchema)
