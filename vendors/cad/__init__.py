"""The CAD: each alarm uploaded as an incident. It is configured once in the settings, so a site
has no CAD table."""

from vendors.base import Vendor
from vendors.cad import refs, steps
from vendors.cad.settings import CadSettings

VENDOR = Vendor(
    key="cad",
    name="CAD",
    steps=steps.ALL,
    plan_steps=(steps.UPLOAD_INCIDENT,),
    refs=refs.ALL,
    upstream_ids=((refs.INCIDENT_ID, "CAD incident"), (refs.SYS_ID, "CAD sysId")),
    settings=CadSettings,
)
