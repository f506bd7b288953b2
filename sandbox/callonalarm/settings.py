"""CallOnAlarm's configuration: API keys, connections (accounts), contacts and delay rules.

The `[callonalarm]` table (default: `sandbox/callonalarm/default.toml`) is parsed and checked here
once, at start-up, so a mistyped rule (a delay of 7 s, a custom code that is an SIA code, a language
CallOnAlarm does not speak) fails loudly instead of answering strangely later. The constraints are the
vendor's: delays 10-300 s in steps of 5 and custom codes of 2-10 characters `A-Z 0-9 _` that are not SIA
codes (CONTRACTS Part B §3.3), languages en/fr/es/it/de (seed 001).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sandbox.callonalarm.codes import is_sia_code

# Rule actions (the dashboard's Delayed / Instant / None).
INSTANT, DELAYED, NONE = "instant", "delayed", "none"

LANGUAGES = frozenset({"en", "fr", "es", "it", "de"})
MIN_DELAY_S, MAX_DELAY_S, DELAY_STEP_S = 10, 300, 5
CUSTOM_CODE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
CUSTOM_CODE_MAX_DESCRIPTION = 100

DEFAULT_RATE_LIMIT = 100
DEFAULT_RATE_WINDOW_S = 3600.0
DEFAULT_RING_S = 30.0
DEFAULT_ROUNDS = 2


@dataclass(frozen=True, slots=True)
class Rule:
    """What a connection does with one event code: the action and the Cancel / Technical ticks."""

    action: str = NONE
    delay_s: int = 0
    cancel: bool = False
    technical: bool = False


NO_ACTION = Rule()


@dataclass(frozen=True, slots=True)
class Contact:
    """A person the procedure calls, in order; `ring_s` is how long their phone rings per call."""

    name: str
    phone: str
    language: str
    ring_s: float


@dataclass(frozen=True, slots=True)
class Account:
    """A connection (account number) with its switch, contacts, delay rule and custom codes.

    `rules` is None when the connection has no delay rule: it then logs every SIA event and calls no one.
    """

    number: str
    active: bool
    language: str
    technical_email: str | None
    contacts: tuple[Contact, ...]
    rules: Mapping[str, Rule] | None
    custom_codes: Mapping[str, Rule]
    rounds: int
    out_of_credits: bool

    def rule_for(self, code: str) -> Rule | None:
        """The rule for `code`, or None when it is neither an SIA code nor one of this connection's."""
        if code in self.custom_codes:
            return self.custom_codes[code]
        if not is_sia_code(code):
            return None
        return NO_ACTION if self.rules is None else self.rules.get(code, NO_ACTION)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A dashboard API key, the account numbers it may use, and when it stops working (epoch s)."""

    key: str
    accounts: tuple[str, ...]
    expires_at: float | None

    def expired(self, now: float) -> bool:
        """Whether the key has expired by `now`."""
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True, slots=True)
class Settings:
    """The parsed `[callonalarm]` table."""

    api_keys: Mapping[str, ApiKey]
    accounts: Mapping[str, Account]
    rate_limit: int
    rate_window_s: float

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> "Settings":
        """Parse and check the `[callonalarm]` configuration table.

        Raises:
            ValueError: the table is inconsistent (the message names the offending entry).
        """
        rule_sets = {
            str(name): _rule_set(str(name), raw) for name, raw in dict(table.get("delay_rules", {})).items()
        }
        ring_s = _positive(table.get("ring_seconds", DEFAULT_RING_S), "ring_seconds")
        rounds = int(_positive(table.get("rounds", DEFAULT_ROUNDS), "rounds"))
        accounts = {
            str(number): _account(str(number), raw, rule_sets, ring_s, rounds)
            for number, raw in dict(table.get("accounts", {})).items()
        }
        api_keys: dict[str, ApiKey] = {}
        for key, raw in dict(table.get("api_keys", {})).items():
            numbers = tuple(str(number) for number in raw.get("accounts", []))
            unknown = [number for number in numbers if number not in accounts]
            if unknown:
                raise ValueError(f"[callonalarm.api_keys] {key!r} names unknown accounts {unknown}")
            expires = raw.get("expires_at")
            api_keys[str(key)] = ApiKey(
                key=str(key),
                accounts=numbers,
                expires_at=None if expires is None else _epoch(expires, f"api_keys {key!r} expires_at"),
            )
        return cls(
            api_keys=api_keys,
            accounts=accounts,
            rate_limit=int(_positive(table.get("rate_limit_per_hour", DEFAULT_RATE_LIMIT), "rate_limit")),
            rate_window_s=_positive(table.get("rate_window_s", DEFAULT_RATE_WINDOW_S), "rate_window_s"),
        )


def _rule(code: str, action: str, delay_s: Any, cancel: bool, technical: bool, where: str) -> Rule:
    if action not in (INSTANT, DELAYED, NONE):
        raise ValueError(f"{where}: {code} action must be instant, delayed or none (got {action!r})")
    if action == DELAYED and (
        isinstance(delay_s, bool)
        or not isinstance(delay_s, int)
        or not MIN_DELAY_S <= delay_s <= MAX_DELAY_S
        or delay_s % DELAY_STEP_S
    ):
        raise ValueError(
            f"{where}: {code} delay must be {MIN_DELAY_S}-{MAX_DELAY_S} s in steps of "
            f"{DELAY_STEP_S} (got {delay_s!r})"
        )
    return Rule(
        action=action, delay_s=delay_s if action == DELAYED else 0, cancel=cancel, technical=technical
    )


def _rule_set(name: str, raw: Mapping[str, Any]) -> dict[str, Rule]:
    """A rule set given as lists: `instant`, `delayed` (code = seconds), `technical`, `cancel`."""
    where = f"[callonalarm.delay_rules.{name}]"
    instant = {str(code) for code in raw.get("instant", [])}
    delayed = {str(code): delay for code, delay in dict(raw.get("delayed", {})).items()}
    technical = {str(code) for code in raw.get("technical", [])}
    cancel = {str(code) for code in raw.get("cancel", [])}
    both = sorted(instant & set(delayed))
    if both:
        raise ValueError(f"{where}: {both} cannot be both instant and delayed")
    codes = instant | set(delayed) | technical | cancel
    not_sia = sorted(code for code in codes if not is_sia_code(code))
    if not_sia:
        raise ValueError(f"{where}: {not_sia} are not SIA codes of seed 001 (custom codes go on the account)")
    rules: dict[str, Rule] = {}
    for code in sorted(codes):
        action = INSTANT if code in instant else DELAYED if code in delayed else NONE
        rules[code] = _rule(code, action, delayed.get(code, 0), code in cancel, code in technical, where)
    return rules


def _custom_code(code: str, raw: Mapping[str, Any], where: str) -> Rule:
    if not 2 <= len(code) <= 10 or not set(code) <= CUSTOM_CODE_CHARS:
        raise ValueError(f"{where}: custom code {code!r} must be 2-10 characters of A-Z, 0-9 and _")
    if is_sia_code(code):
        raise ValueError(f"{where}: custom code {code!r} collides with an official SIA code")
    if len(str(raw.get("description", ""))) > CUSTOM_CODE_MAX_DESCRIPTION:
        raise ValueError(f"{where}: custom code {code!r} description is over 100 characters")
    return _rule(
        code,
        str(raw.get("action", NONE)),
        raw.get("delay_s", 0),
        bool(raw.get("cancel", False)),
        bool(raw.get("technical", False)),
        where,
    )


def _account(
    number: str, raw: Mapping[str, Any], rule_sets: Mapping[str, dict[str, Rule]], ring_s: float, rounds: int
) -> Account:
    where = f"[callonalarm.accounts.{number}]"
    language = str(raw.get("language", "en"))
    if language not in LANGUAGES:
        raise ValueError(f"{where}: language must be one of {sorted(LANGUAGES)} (got {language!r})")
    rule_name = raw.get("delay_rule")
    if rule_name and rule_name not in rule_sets:
        raise ValueError(f"{where}: delay_rule {rule_name!r} is not a [callonalarm.delay_rules] table")
    contacts = tuple(_contact(entry, language, ring_s, where) for entry in raw.get("contacts", []))
    if not contacts:
        raise ValueError(f"{where}: a connection needs at least one contact")
    return Account(
        number=number,
        active=bool(raw.get("active", True)),
        language=language,
        technical_email=raw.get("technical_email") or None,
        contacts=contacts,
        rules=rule_sets[rule_name] if rule_name else None,
        custom_codes={
            str(code): _custom_code(str(code), spec, where)
            for code, spec in dict(raw.get("custom_codes", {})).items()
        },
        rounds=int(_positive(raw.get("rounds", rounds), f"{where} rounds")),
        out_of_credits=bool(raw.get("out_of_credits", False)),
    )


def _contact(raw: Mapping[str, Any], language: str, ring_s: float, where: str) -> Contact:
    phone = str(raw.get("phone", "")).strip()
    if not phone:
        raise ValueError(f"{where}: every contact needs a phone")
    contact_language = str(raw.get("language", language))
    if contact_language not in LANGUAGES:
        raise ValueError(f"{where}: contact {phone} language {contact_language!r} is not supported")
    return Contact(
        name=str(raw.get("name", phone)),
        phone=phone,
        language=contact_language,
        ring_s=_positive(raw.get("ring_seconds", ring_s), f"{where} ring_seconds"),
    )


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"[callonalarm] {name} must be a positive number (got {value!r})")
    return float(value)


def _epoch(value: Any, name: str) -> float:
    if isinstance(value, datetime):  # TOML offset date-times arrive parsed
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            raise ValueError(f"[callonalarm] {name} must be an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise ValueError(f"[callonalarm] {name} needs a UTC offset")
    return moment.timestamp()
