"""The sites file: loading, validation messages, routing lookups and source authentication."""

import base64
import hmac
import re
import tomllib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.plans import NEVER_HELD_FAMILIES, Plan, Step, format_duration
from app.domain.site_tables import Location
from app.domain.sites import (
    Site,
    Sites,
    SitesFileError,
    Source,
)
from app.domain.sites_file import load_sites, parse_duration
from vendors.callonalarm import steps as callonalarm_steps
from vendors.callonalarm.site import CallOnAlarmSite
from vendors.rapidsos import steps as rapidsos_steps
from vendors.rapidsos.site import RapidSOSSite
from vendors.tracktik.site import TrackTikSite

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).parents[4] / "config" / "examples" / "sites.toml"

PANELS_TOKEN = "panels-token-0001-aaaaaaaaaaaa"
PANELS_NEXT_TOKEN = "panels-token-0002-bbbbbbbbbbbb"
ALTA_TOKEN = "alta-token-0001-cccccccccccccc"
PANELS_WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()
ENVIRON = {
    "PANELS_TOKEN": PANELS_TOKEN,
    "PANELS_WHSEC": PANELS_WHSEC,
    "ALTA_TOKEN": ALTA_TOKEN,
    "ACME_PANELS_TOKEN": PANELS_TOKEN,
    "ACME_PANELS_WHSEC": PANELS_WHSEC,
    "ALTA_MAIN_TOKEN": ALTA_TOKEN,
}

BASE = """
[sources.panels]
kind = "panel"
token_env = "PANELS_TOKEN"
signing_secrets_env = "PANELS_WHSEC"

[sources.alta]
kind = "alta"
token_env = "ALTA_TOKEN"

[sites.hq]
name = "HQ"
sources = ["panels", "alta"]
accounts = ["ab-95367"]
alta_zones = ["az-5d1c"]
timezone = "America/Montreal"
site_type = "COMMERCIAL"
cancel_window = "90s"
plan = "commercial"
location = { address_line1 = "4200 Blvd Saint-Laurent", city = "Montréal", state = "QC", country = "CA", \
postal_code = "H2W 2R2", latitude = 45.5183, longitude = -73.5822 }
tracktik = { alarm_organization = 687, alarm_type_codes = { fire = "22222", default = "11111" } }
callonalarm = { account_number = "CA-1001" }

[sites.home]
name = "Home"
sources = ["panels"]
accounts = ["1f4a"]
timezone = "America/New_York"
site_type = "RESIDENTIAL"
plan = "residential"
location = { address_line1 = "48 Maple Ridge Rd", city = "Newton", state = "MA", country = "US", \
postal_code = "02459" }
callonalarm = { account_number = "CA-2042" }
rapidsos = { callflow = "AcmeFlow", emergency_contacts = [{ name = "Dana Lee", phone = "+16175550142" }] }

[plans.commercial]
fire = ["tracktik.create_alarm", "callonalarm.trigger"]
burglary = ["tracktik.create_alarm", { do = "callonalarm.trigger", after = "60s", cancellable = true }]
trouble = ["callonalarm.trigger"]
default = ["tracktik.create_alarm"]

[plans.residential]
fire = ["rapidsos.create_alert", "callonalarm.trigger"]
default = ["callonalarm.trigger"]
""".replace("\\\n", "")

Write = Callable[[str], Path]


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Write:
    """Write a sites file as ``sites.toml`` in the working directory, so messages read as users see them."""
    monkeypatch.chdir(tmp_path)

    def _write(text: str) -> Path:
        path = Path("sites.toml")
        path.write_text(text, encoding="utf-8")
        return path

    return _write


def variant(*replacements: tuple[str, str]) -> str:
    """BASE with each (old, new) replaced once; fails loudly if ``old`` is not there."""
    text = BASE
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def errors_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SitesFileError) as caught:
        load_sites(path, ENVIRON if environ is None else environ)
    return list(caught.value.errors)


# --- the example file -------------------------------------------------------------------------------


def test_the_example_file_loads_cleanly() -> None:
    sites = load_sites(EXAMPLE, ENVIRON)

    assert [s.key for s in sites.sites] == ["montreal-hq", "newton-residence"]
    assert [s.key for s in sites.sources] == ["acme-panels", "alta-main"]


def test_the_example_lists_every_environment_variable_it_reads_in_its_header() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    header = text.split("\n[", 1)[0]
    document = tomllib.loads(text)
    names = {
        value
        for source in document["sources"].values()
        for key, value in source.items()
        if key.endswith("_env")
    }

    assert names
    for name in names:
        assert re.search(rf"^#\s+{name}\s", header, re.MULTILINE), name


def test_the_example_routes_a_panel_account_and_an_alta_zone_to_montreal() -> None:
    sites = load_sites(EXAMPLE, ENVIRON)

    by_account = sites.site_for_account("acme-panels", "ab-95367")
    by_zone = sites.site_for_alta_zone("alta-main", "az-5d1c")

    assert by_account is not None
    assert by_account.key == "montreal-hq"
    assert by_zone is by_account
    assert by_account.cancel_window == timedelta(seconds=90)
    assert str(by_account.timezone) == "America/Montreal"


def test_the_example_plans_hold_burglary_calls_but_never_fire() -> None:
    sites = load_sites(EXAMPLE, ENVIRON)
    site = sites.site("montreal-hq")
    assert site is not None

    burglary = site.plan.steps_for("burglary", "alarm")
    fire = site.plan.steps_for("fire", "alarm")

    assert burglary[-1] == Step(callonalarm_steps.TRIGGER, after=timedelta(seconds=60), cancellable=True)
    assert not any(step.cancellable or step.after for step in fire)


def test_the_example_residential_plan_requests_911_first_for_every_life_safety_alarm() -> None:
    # A sprinkler, a heat or CO detector, a holdup, a panic or a personal emergency fell back to
    # "default" (one call to the owner): no 911 request. And a duress is never rung back.
    sites = load_sites(EXAMPLE, ENVIRON)
    home, hq = sites.site("newton-residence"), sites.site("montreal-hq")
    assert home is not None and hq is not None

    for family in ("fire", "sprinkler", "heat", "gas", "medical", "emergency", "panic", "holdup"):
        steps = home.plan.steps_for(family, "alarm")
        assert steps and steps[0].kind == rapidsos_steps.CREATE_ALERT, family
    for site in (home, hq):
        assert all(step.kind != callonalarm_steps.TRIGGER for step in site.plan.steps_for("holdup", "alarm"))


# --- loading ----------------------------------------------------------------------------------------


def test_a_valid_file_loads_every_field(write: Write) -> None:
    sites = load_sites(write(BASE), ENVIRON)
    hq = sites.site("hq")
    home = sites.site("home")
    assert hq is not None
    assert home is not None

    assert hq.name == "HQ"
    assert hq.sources == ("panels", "alta")
    assert hq.site_type == "COMMERCIAL"
    assert hq.location == Location(
        address_line1="4200 Blvd Saint-Laurent",
        city="Montréal",
        state="QC",
        country="CA",
        postal_code="H2W 2R2",
        latitude=45.5183,
        longitude=-73.5822,
    )
    tracktik = hq.table(TrackTikSite)
    assert tracktik is not None
    assert tracktik.alarm_organization == 687
    assert tracktik.alarm_connection_custom_id is None
    callonalarm = hq.table(CallOnAlarmSite)
    assert callonalarm is not None
    assert callonalarm.account_number == "CA-1001"
    assert hq.table(RapidSOSSite) is None
    assert hq.instructions == ""
    assert home.cancel_window == timedelta(minutes=2)  # the default
    rapidsos = home.table(RapidSOSSite)
    assert rapidsos is not None
    assert rapidsos.emergency_contacts[0].phone == "+16175550142"


def test_no_sites_file_means_no_source_may_post() -> None:
    sites = load_sites(None, ENVIRON)

    assert sites.sources == ()
    assert sites.source_for_token(PANELS_TOKEN) is None


def test_a_missing_file_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    assert errors_of(path) == [f"{path}: cannot be read: No such file or directory"]


def test_a_file_that_is_not_toml_is_reported_with_its_line(write: Write) -> None:
    (line,) = errors_of(write("[sites.hq]\nname = \n"))

    assert line.startswith("sites.toml: is not valid TOML: ")
    assert "line 2" in line


def test_a_sites_file_error_is_a_value_error_with_one_line_per_problem(write: Write) -> None:
    path = write(
        variant(
            ('timezone = "America/New_York"', 'timezone = "Mars/Olympus"'),
            ('cancel_window = "90s"', 'cancel_window = "1d"'),
        )
    )

    with pytest.raises(ValueError, match="Mars/Olympus") as caught:
        load_sites(path, ENVIRON)

    assert str(caught.value).splitlines() == list(caught.value.errors)  # type: ignore[attr-defined]


# --- every message names the file, the table and the key ---------------------------------------------

MESSAGES = [
    pytest.param(
        (('cancel_window = "90s"', 'cancel_window = "90x"'),),
        'sites.toml: sites.hq.cancel_window: "90x" is not a duration like "90s" or "2m"',
        id="duration",
    ),
    pytest.param(
        (('cancel_window = "90s"', 'cancel_windw = "90s"'),),
        'sites.toml: sites.hq.cancel_windw: unknown key (did you mean "cancel_window"?)',
        id="typo-in-site-key",
    ),
    pytest.param(
        (('kind = "alta"', 'kind = "alta"\ntokn_env = "X"'),),
        'sites.toml: sources.alta.tokn_env: unknown key (did you mean "token_env"?)',
        id="typo-in-source-key",
    ),
    pytest.param(
        (('timezone = "America/Montreal"', 'timezone = "America/Montréal"'),),
        'sites.toml: sites.hq.timezone: "America/Montréal" is not an IANA time zone like "America/Montreal"',
        id="timezone",
    ),
    pytest.param(
        (('site_type = "COMMERCIAL"', 'site_type = "OFFICE"'),),
        'sites.toml: sites.hq.site_type: "OFFICE" is not one of RapidSOS\'s '
        "COMMERCIAL, PERSONAL, RESIDENTIAL, VEHICLE",
        id="site-type",
    ),
    pytest.param(
        (("latitude = 45.5183", "latitude = 95.5"),),
        "sites.toml: sites.hq.location.latitude: 95.5 is not between -90 and 90",
        id="latitude",
    ),
    pytest.param(
        (("longitude = -73.5822", "longitude = -200"),),
        "sites.toml: sites.hq.location.longitude: -200 is not between -180 and 180",
        id="longitude",
    ),
    pytest.param(
        (('postal_code = "02459"', 'postal_code = "02459-1234"'),),
        'sites.toml: sites.home.location.postal_code: "02459-1234" does not fit RapidSOS '
        "(zip_code is exactly 5 characters)",
        id="rapidsos-zip",
    ),
    pytest.param(
        (('city = "Newton"', 'city = "Newton Upper Falls of the Charles River"'),),
        'sites.toml: sites.home.location.city: "Newton Upper Falls of the Charles River" '
        "does not fit RapidSOS (city is 1 to 30 characters)",
        id="rapidsos-city",
    ),
    pytest.param(
        (('state = "MA"', 'state = "Mass"'),),
        'sites.toml: sites.home.location.state: "Mass" does not fit RapidSOS (state is exactly 2 characters)',
        id="rapidsos-state",
    ),
    pytest.param(
        (('phone = "+16175550142"', "phone = 16175550142"),),
        "sites.toml: sites.home.rapidsos.emergency_contacts[0].phone: "
        'must be an E.164 number like "+15145550100" (quote it), not an integer',
        id="rapidsos-phone",
    ),
    pytest.param(
        (('country = "US"', 'country = "USA"'),),
        'sites.toml: sites.home.location.country: "USA" is not a two-letter ISO 3166 code like "CA" or "US"',
        id="country",
    ),
    pytest.param(
        (('sources = ["panels"]', 'sources = ["panel"]'),),
        'sites.toml: sites.home.sources: "panel" is not a source (no [sources.panel] table)',
        id="unknown-source",
    ),
    pytest.param(
        (('plan = "residential"', 'plan = "residentail"'),),
        'sites.toml: sites.home.plan: "residentail" is not a plan (no [plans.residentail] table)',
        id="unknown-plan",
    ),
    pytest.param(
        (('default = ["callonalarm.trigger"]', 'default = ["callonalarm.trigger", "cad.upload"]'),),
        'sites.toml: plans.residential.default[1]: "cad.upload" is not a step kind (alta.collect_video, '
        "alta.find_ongoing_alert, cad.upload_incident, callonalarm.trigger, rapidsos.create_alert, "
        "tracktik.create_alarm)",
        id="step-kind",
    ),
    pytest.param(
        (('trouble = ["callonalarm.trigger"]', 'troubles = ["callonalarm.trigger"]'),),
        'sites.toml: plans.commercial.troubles: unknown key (did you mean "trouble"?) '
        '(a family, "trouble" or "default")',
        id="plan-key",
    ),
    pytest.param(
        (('after = "60s"', 'after = "25h"'),),
        'sites.toml: plans.commercial.burglary[1].after: "25h" is not between "0s" and "24h"',
        id="after-too-long",
    ),
    pytest.param(
        (('after = "60s"', 'after = "-60s"'),),
        'sites.toml: plans.commercial.burglary[1].after: "-60s" is negative; durations start at "0s"',
        id="after-negative",
    ),
    pytest.param(
        (("cancellable = true", 'cancellable = "yes"'),),
        "sites.toml: plans.commercial.burglary[1].cancellable: must be true or false, not a string",
        id="cancellable-type",
    ),
    pytest.param(
        (('kind = "panel"', 'kind = "panels"'),),
        'sites.toml: sources.panels.kind: "panels" is not "panel", "alta" or "dc09"',
        id="source-kind",
    ),
    pytest.param(
        (('token_env = "ALTA_TOKEN"', 'token_env = "ALTA_TOKEN_MISSING"'),),
        "sites.toml: sources.alta.token_env: environment variable ALTA_TOKEN_MISSING is not set",
        id="missing-env",
    ),
    pytest.param(
        (('token_env = "ALTA_TOKEN"\n', ""),),
        "sites.toml: sources.alta.token_env: is required unless signing_secrets_env is set (every source "
        "authenticates)",
        id="no-credential",
    ),
    pytest.param(
        (('accounts = ["1f4a"]', 'accounts = ["1f4a", "1F4A"]'),),
        'sites.toml: sites.home.accounts: "1F4A" is listed twice',
        id="account-twice",
    ),
    pytest.param(
        (('accounts = ["1f4a"]', "accounts = [1234]"),),
        "sites.toml: sites.home.accounts: "
        '1234 is not an identifier (panel account numbers like ["ab-95367"])',
        id="account-type",
    ),
    pytest.param(
        (("alarm_organization = 687", 'alarm_organization = "687"'),),
        "sites.toml: sites.hq.tracktik.alarm_organization: "
        "must be a TrackTik client id like 687, not a string",
        id="tracktik-organization",
    ),
    pytest.param(
        (('callonalarm = { account_number = "CA-2042" }\n', ""),),
        'sites.toml: sites.home.callonalarm: is required: plan "residential" has callonalarm.trigger steps',
        id="vendor-table-needed",
    ),
    pytest.param(
        (('{ fire = "22222", default = "11111" }', '{ fire = "22222" }'),),
        'sites.toml: sites.hq.tracktik.alarm_type_codes: needs a "default" code: plan "commercial" creates '
        "TrackTik alarms by default",
        id="tracktik-default-type-code",
    ),
    pytest.param(
        (
            ('{ fire = "22222", default = "11111" }', '{ fire = "22222" }'),
            ('default = ["tracktik.create_alarm"]', 'default = ["callonalarm.trigger"]'),
        ),
        'sites.toml: sites.hq.tracktik.alarm_type_codes: has no code for burglary and no "default", but plan '
        '"commercial" creates TrackTik alarms for them',
        id="tracktik-family-type-code",
    ),
    pytest.param(
        (('alta_zones = ["az-5d1c"]\n', ""),),
        'sites.toml: sites.hq.alta_zones: is empty, so alta source "alta" cannot post for this site',
        id="source-with-nothing-to-post",
    ),
    pytest.param(
        (('sources = ["panels", "alta"]', 'sources = ["panels"]'),),
        "sites.toml: sites.hq.alta_zones: "
        "are Alta zone ids, but none of the site's sources is an alta source",
        id="zone-without-alta-source",
    ),
    pytest.param(
        (("[plans.residential]", "[plans.unrouted]\n[plans.residential]"),),
        "sites.toml: plans.unrouted: the name is reserved for the built-in plan of alarms no site claims",
        id="reserved-plan-name",
    ),
    pytest.param(
        (("[sites.home]", '[sites."Home Site"]\nname = "x"\n[sites.home]'),),
        "sites.toml: sites.\"Home Site\": names are 1 to 64 lower-case letters, digits, '-' or '_', starting "
        "with a letter or digit",
        id="table-name",
    ),
]


@pytest.mark.parametrize(("replacements", "expected"), MESSAGES)
def test_each_problem_is_one_line_naming_file_table_and_key(
    write: Write, replacements: tuple[tuple[str, str], ...], expected: str
) -> None:
    assert errors_of(write(variant(*replacements))) == [expected]


def test_every_problem_is_reported_at_once_one_per_line(write: Write) -> None:
    path = write(
        variant(
            ('cancel_window = "90s"', 'cancel_window = "90x"'),
            ('timezone = "America/New_York"', 'timezone = "America/Nowhere"'),
            ("latitude = 45.5183", "latitude = 91"),
            ('after = "60s"', 'after = "2 minutes"'),
            ('token_env = "ALTA_TOKEN"', 'token_env = "NOT_SET"'),
        )
    )

    errors = errors_of(path)

    assert [line.split(": ")[1] for line in errors] == [
        "sources.alta.token_env",
        "plans.commercial.burglary[1].after",
        "sites.hq.cancel_window",
        "sites.hq.location.latitude",
        "sites.home.timezone",
    ]
    assert all(line.startswith("sites.toml: ") and "\n" not in line for line in errors)


@pytest.mark.parametrize("family", sorted(NEVER_HELD_FAMILIES))
def test_a_cancellable_step_on_a_life_safety_family_is_refused_at_load(write: Write, family: str) -> None:
    path = write(
        variant(
            (
                'fire = ["tracktik.create_alarm", "callonalarm.trigger"]',
                f'{family} = [{{ do = "callonalarm.trigger", after = "30s", cancellable = true }}]\n'
                + ('fire = ["tracktik.create_alarm"]' if family != "fire" else ""),
            )
        )
    )

    assert errors_of(path) == [
        f'sites.toml: plans.commercial.{family}[0].cancellable: "callonalarm.trigger" cannot be cancellable: '
        f"{family} alarms are never held for a cancel window"
    ]


def test_a_cancellable_default_step_is_refused_when_life_safety_families_fall_back_to_it(
    write: Write,
) -> None:
    path = write(
        variant(
            (
                'default = ["callonalarm.trigger"]',
                'default = [{ do = "callonalarm.trigger", cancellable = true }]',
            )
        )
    )

    (line,) = errors_of(path)

    assert line.startswith("sites.toml: plans.residential.default[0].cancellable: ")
    # unknown is not among them: it never falls back to default.
    assert "emergency, gas, heat, holdup, medical, panic, sprinkler (no list of their own)" in line


def test_an_account_claimed_by_two_sites_on_the_same_source_is_refused(write: Write) -> None:
    path = write(variant(('accounts = ["1f4a"]', 'accounts = ["1f4a", "AB-95367"]')))

    assert errors_of(path) == [
        'sites.toml: sites.home.accounts: "AB-95367" is already claimed by site "hq" on source "panels"'
    ]


def test_an_alta_zone_claimed_by_two_sites_on_the_same_source_is_refused(write: Write) -> None:
    path = write(
        variant(
            ('sources = ["panels"]', 'sources = ["panels", "alta"]'),
            ('accounts = ["1f4a"]', 'accounts = ["1f4a"]\nalta_zones = ["az-5d1c"]'),
        )
    )

    assert errors_of(path) == [
        'sites.toml: sites.home.alta_zones: "az-5d1c" is already claimed by site "hq" on source "alta"'
    ]


def test_an_alta_zone_spelled_like_a_panel_account_of_its_site_is_refused(write: Write) -> None:
    """Both alarms would carry the same account: a user's disarm at the panel would cancel the video
    alarm of the zone."""
    path = write(variant(('alta_zones = ["az-5d1c"]', 'alta_zones = ["az-5d1c", " AB-95367"]')))

    assert errors_of(path) == [
        'sites.toml: sites.hq.alta_zones: "AB-95367" is also one of this site\'s panel accounts: '
        "their alarms would group, restore and cancel together"
    ]


@pytest.mark.parametrize("family", ["power", "network", "system", "test"])
def test_a_plan_list_for_a_family_no_code_opens_an_alarm_of_is_refused(write: Write, family: str) -> None:
    """AC loss (AT), a comms failure (YC), a test (RP): troubles and tests, never alarms of their family.
    A list under the family's name would be accepted and never run."""
    path = write(
        variant(
            (
                'default = ["callonalarm.trigger"]',
                f'default = ["callonalarm.trigger"]\n{family} = ["callonalarm.trigger"]',
            )
        )
    )

    assert errors_of(path) == [
        f"sites.toml: plans.residential.{family}: no SIA code opens a {family} alarm (its signals are "
        'troubles, tests or status): a "trouble" list runs for its troubles'
    ]


def test_the_same_account_on_two_different_sources_routes_each_to_its_own_site(write: Write) -> None:
    other_source = '[sources.other-panels]\nkind = "panel"\ntoken_env = "OTHER_TOKEN"\n\n[sites.home]'
    path = write(
        variant(
            ("[sites.home]", other_source),
            ('sources = ["panels"]', 'sources = ["other-panels"]'),
            ('accounts = ["1f4a"]', 'accounts = ["ab-95367"]'),
        )
    )

    sites = load_sites(path, {**ENVIRON, "OTHER_TOKEN": "other-token-0001-dddddddddd"})

    assert sites.site_for_account("panels", "ab-95367") is sites.site("hq")
    assert sites.site_for_account("other-panels", "ab-95367") is sites.site("home")
    assert {s.key for s in sites.sites_for_account("ab-95367")} == {"hq", "home"}


# --- credentials ------------------------------------------------------------------------------------


def test_a_source_accepts_each_of_several_tokens_during_a_rotation(write: Write) -> None:
    sites = load_sites(write(BASE), {**ENVIRON, "PANELS_TOKEN": f"{PANELS_TOKEN}, {PANELS_NEXT_TOKEN},"})
    panels = sites.source("panels")

    assert panels is not None
    assert panels.tokens == (PANELS_TOKEN, PANELS_NEXT_TOKEN)
    assert sites.source_for_token(PANELS_TOKEN) is panels
    assert sites.source_for_token(PANELS_NEXT_TOKEN) is panels
    assert sites.source_for_token(ALTA_TOKEN) is sites.source("alta")


@pytest.mark.parametrize(
    "presented", ["", "wrong", PANELS_TOKEN + "x", PANELS_TOKEN[:-1], PANELS_TOKEN.upper()]
)
def test_a_wrong_token_matches_no_source(write: Write, presented: str) -> None:
    sites = load_sites(write(BASE), ENVIRON)

    assert sites.source_for_token(presented) is None


def test_a_token_is_compared_in_constant_time_against_every_configured_token(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    sites = load_sites(write(BASE), {**ENVIRON, "PANELS_TOKEN": f"{PANELS_TOKEN},{PANELS_NEXT_TOKEN}"})
    compared: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)

    found = sites.source_for_token(PANELS_TOKEN)  # the very first token configured

    assert found is sites.source("panels")
    assert len(compared) == 3  # no early exit after the match
    assert {len(a) for pair in compared for a in pair} == {32}  # digests: lengths leak nothing


def test_two_sources_may_not_share_a_token(write: Write) -> None:
    path = write(BASE)

    errors = errors_of(path, {**ENVIRON, "ALTA_TOKEN": f"alta-token-0002-eeeeeeeeeeeeee,{PANELS_TOKEN}"})

    assert errors == [
        'sites.toml: sources.alta.token_env: a token in ALTA_TOKEN is also a token of source "panels"; '
        "each token must identify one source"
    ]


def test_a_short_token_is_refused_without_showing_it(write: Write) -> None:
    errors = errors_of(write(BASE), {**ENVIRON, "ALTA_TOKEN": f"{ALTA_TOKEN},hunter2"})

    assert errors == [
        "sites.toml: sources.alta.token_env: token 2 in ALTA_TOKEN must be at least 16 printable ASCII "
        "characters without spaces"
    ]
    assert "hunter2" not in errors[0]


def test_an_empty_token_variable_is_refused(write: Write) -> None:
    assert errors_of(write(BASE), {**ENVIRON, "ALTA_TOKEN": " , "}) == [
        "sites.toml: sources.alta.token_env: environment variable ALTA_TOKEN is empty"
    ]


@pytest.mark.parametrize(
    "secret",
    [
        base64.b64encode(b"k" * 32).decode(),  # no whsec_ prefix
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"k" * 8).decode(),  # too short a key
    ],
)
def test_a_malformed_signing_secret_is_refused_without_showing_it(write: Write, secret: str) -> None:
    errors = errors_of(write(BASE), {**ENVIRON, "PANELS_WHSEC": f"{PANELS_WHSEC},{secret}"})

    assert errors == [
        "sites.toml: sources.panels.signing_secrets_env: secret 2 in PANELS_WHSEC is not a Standard Webhooks "
        'secret ("whsec_" then the base64 of 24 to 64 bytes)'
    ]
    assert secret not in errors[0]


def test_signing_secrets_are_kept_for_rotation_and_decoded_to_hmac_keys(write: Write) -> None:
    second = "whsec_" + base64.b64encode(b"n" * 24).decode()
    sites = load_sites(write(BASE), {**ENVIRON, "PANELS_WHSEC": f"{PANELS_WHSEC},{second}"})
    panels = sites.source("panels")

    assert panels is not None
    assert panels.signing_secrets == (PANELS_WHSEC, second)
    assert panels.signing_keys == (b"k" * 32, b"n" * 24)


def test_a_source_that_only_signs_needs_no_token(write: Write) -> None:
    sites = load_sites(write(variant(('token_env = "PANELS_TOKEN"\n', ""))), ENVIRON)
    panels = sites.source("panels")

    assert panels is not None
    assert panels.tokens == ()
    assert panels.signing_secrets == (PANELS_WHSEC,)


def test_secrets_never_appear_in_a_repr(write: Write) -> None:
    sites = load_sites(write(BASE), ENVIRON)

    shown = repr(sites.sources) + repr(sites)

    assert PANELS_TOKEN not in shown
    assert PANELS_WHSEC not in shown


# --- routing ----------------------------------------------------------------------------------------


def test_an_account_is_found_ignoring_case_and_surrounding_spaces(write: Write) -> None:
    sites = load_sites(write(BASE), ENVIRON)

    assert sites.site_for_account("panels", " AB-95367 ") is sites.site("hq")
    assert sites.site_for_alta_zone("alta", "AZ-5D1C") is sites.site("hq")


def test_a_site_is_routed_only_from_a_source_it_lists(write: Write) -> None:
    sites = load_sites(write(BASE), ENVIRON)

    assert sites.site_for_account("alta", "ab-95367") is None  # an alta source cannot post panel accounts
    assert sites.site_for_alta_zone("panels", "az-5d1c") is None
    assert sites.site_for_account("unknown-source", "ab-95367") is None


def test_an_account_of_another_sources_site_is_told_apart_from_an_unknown_one(write: Write) -> None:
    sites = load_sites(write(BASE), ENVIRON)

    # the web layer answers 403 for the first, records an unrouted alarm for the second
    assert sites.sites_for_account("1F4A") == (sites.site("home"),)
    assert sites.sites_for_account("ffff") == ()
    assert sites.sites_for_alta_zone("az-5d1c") == (sites.site("hq"),)


def test_tracktik_type_codes_follow_the_plan_rules(write: Write) -> None:
    sites = load_sites(write(BASE), ENVIRON)
    hq = sites.site("hq")
    assert hq is not None
    tracktik = hq.table(TrackTikSite)
    assert tracktik is not None

    assert tracktik.alarm_type_code("fire", "alarm") == "22222"
    assert tracktik.alarm_type_code("burglary", "alarm") == "11111"  # falls back to default
    assert tracktik.alarm_type_code("fire", "trouble") == "11111"  # a fire trouble is not a fire


def test_a_directory_built_in_code_refuses_an_account_claimed_twice() -> None:
    panels = Source(key="panels", kind="panel", tokens=(PANELS_TOKEN,))
    plan = Plan(key="p", steps_by_key={})

    def site(key: str) -> Site:
        return Site(
            key=key,
            name=key,
            sources=("panels",),
            accounts=("ab-95367",),
            alta_zones=(),
            timezone=ZoneInfo("UTC"),
            site_type="COMMERCIAL",
            instructions="",
            cancel_window=timedelta(minutes=2),
            plan=plan,
            location=Location(address_line1="1 Main St"),
        )

    with pytest.raises(ValueError, match="already site 'a'"):
        Sites(sources=[panels], sites=[site("a"), site("b")])


# --- durations --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0s", timedelta(0)),
        ("90s", timedelta(seconds=90)),
        ("2m", timedelta(minutes=2)),
        ("1h", timedelta(hours=1)),
        ("1m30s", timedelta(seconds=90)),
    ],
)
def test_durations_are_written_with_a_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "90", "90x", "1.5m", "-5s", "2 m", "30s1m", "1d"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    assert parse_duration(text) is None


@given(st.integers(min_value=0, max_value=24 * 3600))
def test_a_written_duration_reads_back_the_same(seconds: int) -> None:
    delta = timedelta(seconds=seconds)

    assert parse_duration(format_duration(delta)) == delta
