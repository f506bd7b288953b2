"""The words a plan is written in: alarm families and kinds, the plan keys, and durations.

Below the plan model and the vendor declarations alike: a vendor's site table (e.g. alarm type codes
by plan key) is read in these words, and ``app.domain.plans`` validates plans in them and in the
step kinds the vendor registry declares, so neither imports the other's module to learn them.
"""

from datetime import timedelta

# These sets mirror app.domain.sia (Family, Kind and NEVER_HELD_FAMILIES). They are spelled out here
# rather than imported so that the plan model, and the sites file that validates against it, do not
# load the SIA catalogue; tests/unit/app/domain/test_plans.py checks that they agree.
FAMILIES: frozenset[str] = frozenset(
    {
        "fire",
        "burglary",
        "holdup",
        "panic",
        "medical",
        "emergency",
        "gas",
        "heat",
        "water",
        "freeze",
        "sprinkler",
        "tamper",
        "access",
        "power",
        "system",
        "network",
        "test",
        "untyped",
        "unknown",
    }
)
KINDS: frozenset[str] = frozenset(
    {
        "alarm",
        "restore",
        "trouble",
        "trouble_restore",
        "supervisory",
        "bypass",
        "unbypass",
        "cancel",
        "opening",
        "closing",
        "test",
        "status",
        "unknown",
    }
)

# Families whose alarms are acted on at once and never stopped by a cancel. Mirrors
# sia.NEVER_HELD_FAMILIES: fire, medical, holdup, panic, gas and emergency, plus sprinkler (water flow)
# and heat, which are fire signals (CONTRACTS.md Part B §6.4), and unknown, because a code nobody can
# read might be a fire.
NEVER_HELD_FAMILIES: frozenset[str] = frozenset(
    {"fire", "sprinkler", "heat", "gas", "medical", "emergency", "holdup", "panic", "unknown"}
)

TROUBLE_KEY = "trouble"
DEFAULT_KEY = "default"
# A code outside the SIA catalogue: the bridge cannot know what it means, so it dispatches nothing on a
# guess. Only a list of this name (an explicit opt-in) runs for it; never "default".
UNKNOWN_KEY = "unknown"
# The keys a plan may have: one list per family, one for troubles, one fallback for alarms.
PLAN_KEYS: frozenset[str] = FAMILIES | {TROUBLE_KEY, DEFAULT_KEY}

# Kinds that start new work. An unknown kind opens an alarm like an alarm does (a signal nobody
# understands is shown to a person, never dropped), but runs only the plan's "unknown" list.
ALARM_KINDS: frozenset[str] = frozenset({"alarm", "unknown"})
TROUBLE_KINDS: frozenset[str] = frozenset({"trouble", "supervisory"})


def format_duration(delta: timedelta) -> str:
    """``delta`` the way the sites file writes it: ``"90s"`` becomes ``"1m30s"``, zero is ``"0s"``."""
    sign, seconds = ("-", -delta) if delta < timedelta(0) else ("", delta)
    total = int(seconds.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return sign + ("".join(parts) or "0s")
