"""Every task name the web side or the dispatcher sends, in one place.

The web process reaches the workers only through these strings (``send_task``); a unit test checks
that each one is registered by the worker app, so a rename cannot orphan queued messages.
An action's ``kind`` in the ledger is its task name. Which vendor runs a step, and which steps a site's
plan may name, each vendor declares in its package (``vendors``).
"""

from typing import Final

SYSTEM_SELFTEST: Final = "system.selftest"
DISPATCHER_SEND_DUE_ACTIONS: Final = "dispatcher.send_due_actions"
SYSTEM_WATCHDOG: Final = "system.watchdog"

ALTA_FIND_ONGOING_ALERT: Final = "alta.find_ongoing_alert"
ALTA_COLLECT_VIDEO: Final = "alta.collect_video"
ALTA_VERIFY: Final = "alta.verify"
ALTA_END: Final = "alta.end"
TRACKTIK_CREATE_ALARM: Final = "tracktik.create_alarm"
CALLONALARM_TRIGGER: Final = "callonalarm.trigger"
CALLONALARM_FOLLOW_STATUS: Final = "callonalarm.follow_status"
CALLONALARM_SEND_RESTORE: Final = "callonalarm.send_restore"
RAPIDSOS_CREATE_ALERT: Final = "rapidsos.create_alert"
RAPIDSOS_CANCEL_ALERT: Final = "rapidsos.cancel_alert"
CAD_UPLOAD_INCIDENT: Final = "cad.upload_incident"
