"""The system's task names: the tasks the web side or the dispatcher sends that belong to no vendor.

The web process reaches the workers only through task names (``send_task``); a unit test checks
that each one, these and every vendor's (``vendors.<key>.steps``), is registered by the worker app,
so a rename cannot orphan queued messages. An action's ``kind`` in the ledger is its task name.
Which vendor runs a step, and which steps a site's plan may name, each vendor declares in its
package (``vendors``).
"""

from typing import Final

SYSTEM_SELFTEST: Final = "system.selftest"
DISPATCHER_SEND_DUE_ACTIONS: Final = "dispatcher.send_due_actions"
SYSTEM_WATCHDOG: Final = "system.watchdog"
