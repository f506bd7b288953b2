"""The ``alarm.refs`` keys the Alta steps write (and others read: the video links go to the guard)."""

from typing import Final

ALERT_GUID: Final = "alta_alert_guid"
VIDEO_LINKS: Final = "video_links"  # a list of URLs (or of objects with a "url")
MERGED: Final = "alta_merged"
ORIGIN_NAME: Final = "alta_origin_name"
VERIFICATION: Final = "alta_verification"  # {"verdict", "acknowledgment_code", "ended"}
ENDED: Final = "alta_ended"

ALL: Final = frozenset({ALERT_GUID, VIDEO_LINKS, MERGED, ORIGIN_NAME, VERIFICATION, ENDED})
