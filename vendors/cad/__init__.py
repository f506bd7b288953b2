"""The CAD: each alarm uploaded as an incident. It is configured once in the settings, so a site
has no CAD table."""

from app.domain import task_names
from vendors.base import Vendor
from vendors.cad import refs

VENDOR = Vendor(
    key="cad",
    name="CAD",
    steps=frozenset({task_names.CAD_UPLOAD_INCIDENT}),
    plan_steps=(task_names.CAD_UPLOAD_INCIDENT,),
    refs=refs.ALL,
    upstream_ids=((refs.INCIDENT_ID, "CAD incident"), (refs.SYS_ID, "CAD sysId")),
)
