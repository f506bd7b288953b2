"""Tasks that drive CallOnAlarm: trigger the site's phone alert, follow it until someone acknowledges
(or nobody does), and send the restore code that cancels calls still waiting in their delay.

Refs written on the alarm: ``callonalarm_alert_id``, ``callonalarm_account``, ``callonalarm_status``,
``callonalarm_delay_s``, ``callonalarm_acknowledged_by``/``_at``, ``callonalarm_calls_made``,
``callonalarm_restore_sent``, ``callonalarm_restore_code``, ``callonalarm_restore_alert_id``.

Every request counts against the deployment's 100 requests/hour, so polls are spaced by
``CALLONALARM_POLL_INTERVAL_S`` (the first one not before the vendor's own delay ends) and capped.

Language: a trigger's ``message`` overrides the account's default voice message and is read by the
account's voice (seed 001: en, fr, es, it or de). The bridge's messages are English, so they are sent
only to an account whose site declares ``language = "en"`` (the default); any other account's
contacts hear CallOnAlarm's own message for the code, in their language, and our English text stays in
the bridge's timeline. One exception: a code CallOnAlarm refuses, sent as ``UX`` (Undefined Alarm),
carries the panel's raw code as its message, since nothing else would tell what the panel sent, and a
code reads the same in every language. The monitoring centre's own account (the phone fallback's
``CALLONALARM_FALLBACK_ACCOUNT``) is taken as English. A trigger answer whose ``language`` is not the
one declared puts a line on the alarm's timeline and a warning in the log, at the first call.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from celery import shared_task

from app.domain import sia
from app.domain.alarms import AlarmContext
from app.ledger.models import AlarmState
from vendors.callonalarm import refs, steps
from vendors.callonalarm.client import CallOnAlarmClient, InvalidEventCodeError, is_final
from vendors.callonalarm.settings import CallOnAlarmSettings
from vendors.callonalarm.site import ENGLISH, CallOnAlarmSite
from workers.clients.errors import NotYetError, PreconditionError
from workers.perform import FollowUp, Job, Outcome, perform
from workers.step_task import ActionTask, StepTask

UPSTREAM = "callonalarm"
log = structlog.get_logger(__name__)
ALTA_EVENT_CODE = "BA"  # an Alta Protect detection is a video-verified intrusion: Burglary Alarm
CANCEL_EVENT_CODE = "OC"  # "Cancel Report": what we mean when the alarm's code has no restore pair
# "Undefined Alarm" (seed 001): what CallOnAlarm is told of a code it refuses, so the contacts are
# still called; the panel's own code goes in the message.
UNDEFINED_EVENT_CODE = "UX"
MAX_POLLS = 40
NOBODY_ANSWERED = frozenset({"timeout", "failed"})
# What a restore code does to an alert of its account (CONTRACTS Part A item 11: every pending alert
# of the account, whatever its zone or alarm).
CANCELLED = frozenset({"cancelled", "cancelled_during_calls"})
# Trigger statuses that place no call at all.
NO_CALL_STATUSES = steps.REACHED_NOBODY["status"]
TRIGGER_IN_FLIGHT_RECHECK_S = 2.0


@shared_task(name=steps.TRIGGER, base=StepTask, bind=True, ignore_result=True)
def trigger(self: ActionTask, action_id: int) -> str:
    """Trigger the site's CallOnAlarm phone alert for the alarm."""
    return perform(self.runtime, action_id, _trigger)


@shared_task(name=steps.FOLLOW_STATUS, base=StepTask, bind=True, ignore_result=True)
def follow_status(self: ActionTask, action_id: int) -> str:
    """Poll one CallOnAlarm alert's status and record it; poll again until it ends."""
    return perform(self.runtime, action_id, _follow_status)


@shared_task(name=steps.SEND_RESTORE, base=StepTask, bind=True, ignore_result=True)
def send_restore(self: ActionTask, action_id: int) -> str:
    """Send the restore code that cancels the alarm's pending CallOnAlarm calls."""
    return perform(self.runtime, action_id, _send_restore)


def _trigger(job: Job) -> Outcome:
    """Call the site's contacts (or, as the phone fallback, the given account).

    A code CallOnAlarm refuses as "Invalid eventCode" (not in seed 001's list, not one of the
    connection's custom codes) is sent again once as ``UX``, "Undefined Alarm", with the panel's code
    in the message: an alarm nobody could classify still reaches its contacts.

    Idempotency: CallOnAlarm has no idempotency key and no lookup but by alert id, so an attempt whose
    outcome is unknown (``action.outcome_unknown``: the answer was lost after sending) cannot be
    reconciled. The rule is to trigger again: for a life-safety alarm a duplicate phone call is
    safer than none. The retry's message says so, so the person called twice knows why.

    The message is sent only to an English account (see the module docstring): another account's
    contacts hear CallOnAlarm's default message in their language, and the ``UX`` retry carries the
    panel's raw code alone.
    """
    alarm = _require_alarm(job)
    params = job.action.params
    account = _account(job, alarm)
    language = _declared_language(alarm, account)
    code = alarm.code or ALTA_EVENT_CODE
    message = _message(alarm, code, params)
    if job.action.outcome_unknown:
        message += " (repeat: the previous call request may have gone through)"
    sent: str | None = message if language == ENGLISH else None
    client = job.clients.get(CallOnAlarmClient)
    # A life-safety alarm's calls, and a fallback for a dispatch that failed, may take the hour's
    # reserved requests; the site's calls for a burglary or a trouble may not.
    urgent = alarm.priority == sia.Priority.LIFE_SAFETY or bool(params.get("fallback"))
    try:
        result = client.trigger(account, code, alarm.zone, sent, urgent=urgent)
    except InvalidEventCodeError:
        # A code outside seed 001's list and the connection's custom codes (an unknown panel code is
        # ranked life-safety): refused, nothing created. Call anyway, as an Undefined Alarm.
        if code == UNDEFINED_EVENT_CODE:
            raise
        message = f"panel code {code} (sent as {UNDEFINED_EVENT_CODE}): {message}"
        # "Undefined Alarm" alone says nothing of what the panel sent: its raw code does, in any
        # language, so a non-English account gets the code and nothing else.
        sent = message if language == ENGLISH else code
        code = UNDEFINED_EVENT_CODE
        result = client.trigger(account, code, alarm.zone, sent, urgent=urgent)
    learned: dict[str, Any] = {
        refs.ALERT_ID: result.alert_id,
        refs.ACCOUNT: account,
        refs.STATUS: result.status,
        refs.DELAY_S: result.delay_seconds,
    }
    follow_ups: tuple[FollowUp, ...] = ()
    if not result.is_final:
        # Polling during the vendor's delay learns nothing a restore would not tell us, and each
        # poll spends 1% of the hourly budget: the first one waits for the calls to start.
        poll_interval_s = job.settings.vendor(CallOnAlarmSettings).poll_interval_s
        follow_ups = (
            FollowUp(
                steps.FOLLOW_STATUS,
                after_s=max(poll_interval_s, float(result.delay_seconds)),
                params={"alert_id": result.alert_id},
            ),
        )
    needs_person = None
    if result.status in NO_CALL_STATUSES and (params.get("fallback") or result.status == "logged_inactive"):
        needs_person = f"CallOnAlarm placed no call ({result.status}) on account {account}"
    timeline = f"CallOnAlarm alert {result.alert_id}: {result.status} ({code} on account {account})"
    if language != ENGLISH:
        heard = f"the panel's code {sent} as the message" if sent else "CallOnAlarm's own message"
        timeline += f"; the contacts hear {heard} in {language}, not ours ({message!r})"
    mismatch = _language_mismatch(alarm, account, result.language)
    if mismatch:
        timeline += f"; {mismatch}"
    return Outcome(
        external_id=result.alert_id,
        result={
            "alert_id": result.alert_id,
            "account": account,
            "event_code": code,
            "status": result.status,
            "delay_s": result.delay_seconds,
            "requires_calls": result.requires_calls,
            "contacts_to_call": result.contacts_to_call,
            "technical_email_sent": result.technical_email_sent,
            "language": result.language,
            "message": message,
            "message_sent": sent,
        },
        message=timeline,
        refs=learned,
        follow_ups=follow_ups,
        needs_person=needs_person,
    )


def _follow_status(job: Job) -> Outcome:
    """Record the alert's status; poll again while it runs, at most ``MAX_POLLS`` times in all.

    A status GET changes nothing upstream, so a retry is always safe.
    """
    params = job.action.params
    alert_id = params.get("alert_id")
    if not alert_id:
        raise PreconditionError(UPSTREAM, "follow_status without an alert_id")
    polls = int(params.get("polls", 0)) + 1
    status = job.clients.get(CallOnAlarmClient).status(str(alert_id))
    learned: dict[str, Any] = {refs.STATUS: status.status, refs.CALLS_MADE: status.calls_made}
    if status.acknowledged_by:
        learned[refs.ACKNOWLEDGED_BY] = status.acknowledged_by
    if status.acknowledged_at:
        learned[refs.ACKNOWLEDGED_AT] = status.acknowledged_at.isoformat()
    follow_ups: tuple[FollowUp, ...] = ()
    needs_person = None
    if status.status in NOBODY_ANSWERED:
        needs_person = f"CallOnAlarm: nobody acknowledged ({status.status})"
    elif status.status in CANCELLED and _cancelled_for_another_alarm(job):
        # A restore sent for another alarm on the same account (a user's cancel of a burglary, a
        # fallback call of another site on the centre's account) cancels this alarm's calls too.
        alarm = _require_alarm(job)
        account = alarm.refs.get(refs.ACCOUNT) or _account(job, alarm)
        needs_person = (
            f"CallOnAlarm alert {alert_id} was {status.status} by a restore sent for another alarm on "
            f"account {account}, not for this one: its contacts may not have been called"
        )
        if alarm.priority == sia.Priority.LIFE_SAFETY:
            # Never held: the calls are placed again (a duplicate call is safer than none).
            follow_ups = (FollowUp(steps.TRIGGER, params={"account": account, "repeat_of": alert_id}),)
            needs_person += "; the calls are placed again"
    elif not status.is_final:
        if polls < MAX_POLLS:
            follow_ups = (
                FollowUp(
                    steps.FOLLOW_STATUS,
                    after_s=job.settings.vendor(CallOnAlarmSettings).poll_interval_s,
                    params={"alert_id": alert_id, "polls": polls},
                ),
            )
        else:
            needs_person = (
                f"CallOnAlarm: alert {alert_id} still {status.status} after {polls} polls; check it there"
            )
    return Outcome(
        external_id=str(alert_id),
        result={"status": status.status, "polls": polls, "calls_made": status.calls_made},
        message=f"CallOnAlarm alert {alert_id}: {status.status}",
        refs=learned,
        follow_ups=follow_ups,
        needs_person=needs_person,
    )


def _cancelled_for_another_alarm(job: Job) -> bool:
    """Whether this alarm's alert was cancelled by no restore of its own: the alarm goes on (not
    ended) and never planned one (a stand-down, or an operator's End, plans its restore first)."""
    alarm = job.alarm
    return (
        alarm is not None
        and alarm.state != AlarmState.ENDED
        and steps.SEND_RESTORE not in alarm.action_kinds
        and not alarm.refs.get(refs.RESTORE_SENT)
    )


def _send_restore(job: Job) -> Outcome:
    """Cancel the calls still pending for the alarm's alert by sending its restore code.

    CallOnAlarm cancels on any code whose rule has Cancel ticked, and cancels every pending alert of
    the account, whatever the zone. The code: ``params.code`` (the restore the panel sent), else the
    alarm code's first restore pair ending in "R" (BA -> BR, IA -> IR), else its first pair, else
    ``OC`` (Cancel Report: says "cancelled" without claiming a disarm, which ``OP`` would). The
    panel's own cancel (``params.cancelled_by``: BC, OP, OS...) is not forwarded as the code: the
    customer's delay rules may not tick Cancel on it, while the alarm's restore pairs are what seed
    001's example uses; it is kept in the result.

    Nothing is sent when the alarm has no CallOnAlarm alert, or when that alert has already ended.
    A user cancel (``params.cancelled_by``) is planned when a trigger is running or done: while that
    trigger is still in flight (no alert id yet) the restore waits for it, at most until the cancel
    window plus one action lease after the alarm opened — by then the trigger has ended one way or
    the other.
    Idempotency: a repeat after an unknown outcome sends the code again; a second restore cancels
    nothing more, it only logs one more event upstream.
    """
    alarm = _require_alarm(job)
    alert_id = alarm.refs.get(refs.ALERT_ID)
    if not alert_id and job.action.params.get("cancelled_by") and _trigger_may_be_in_flight(job, alarm):
        raise NotYetError(
            "the CallOnAlarm trigger has not answered yet", retry_after_s=TRIGGER_IN_FLIGHT_RECHECK_S
        )
    if not alert_id:
        return Outcome(result={"skipped": "no CallOnAlarm alert"}, message="no CallOnAlarm alert to cancel")
    known_status = alarm.refs.get(refs.STATUS)
    if isinstance(known_status, str) and is_final(known_status):
        return Outcome(
            external_id=str(alert_id),
            result={"skipped": f"alert already {known_status}"},
            message=f"CallOnAlarm alert {alert_id} already {known_status}: no restore sent",
        )
    account = job.action.params.get("account") or alarm.refs.get(refs.ACCOUNT)
    account = str(account or _account(job, alarm))
    code = _restore_code(alarm, job.action.params)
    # Our English note, read by a French voice if the code's rule places calls, only on an English
    # account; the restore code itself says what it is in the account's language.
    message = f"alarm-bridge: restore for alert {alert_id}"
    sent = message if _declared_language(alarm, account) == ENGLISH else None
    result = job.clients.get(CallOnAlarmClient).trigger(account, code, alarm.zone, sent)
    return Outcome(
        external_id=result.alert_id,
        result={
            "code": code,
            "account": account,
            "status": result.status,
            "cancels": alert_id,
            "cancelled_by": job.action.params.get("cancelled_by"),
        },
        message=f"CallOnAlarm restore {code} sent for alert {alert_id}",
        refs={
            refs.RESTORE_SENT: True,
            refs.RESTORE_CODE: code,
            refs.RESTORE_ALERT_ID: result.alert_id,
        },
    )


def _trigger_may_be_in_flight(job: Job, alarm: AlarmContext) -> bool:
    window = alarm.site.cancel_window if alarm.site is not None else timedelta(0)
    return job.now < alarm.opened_at + window + timedelta(seconds=job.settings.action_lease_s)


def _require_alarm(job: Job) -> AlarmContext:
    if job.alarm is None:
        raise PreconditionError(UPSTREAM, f"{job.action.kind} has no alarm")
    return job.alarm


def _account(job: Job, alarm: AlarmContext) -> str:
    """The account whose contacts are called: the action's (the fallback's), else the site's."""
    account = job.action.params.get("account")
    if account:
        return str(account)
    site = alarm.site
    table = site.table(CallOnAlarmSite) if site is not None else None
    if table is not None:
        return table.account_number
    raise PreconditionError(UPSTREAM, "no CallOnAlarm account for this alarm's site")


def _site_connection(alarm: AlarmContext, account: str) -> CallOnAlarmSite | None:
    """The site's CallOnAlarm table when ``account`` is the site's own connection, else None."""
    table = alarm.site.table(CallOnAlarmSite) if alarm.site is not None else None
    return table if table is not None and table.account_number == account else None


def _declared_language(alarm: AlarmContext, account: str) -> str:
    """The voice language of ``account`` as the bridge knows it: the site's ``language`` for the
    site's own connection, else English (the monitoring centre's fallback account)."""
    table = _site_connection(alarm, account)
    return table.language if table is not None else ENGLISH


def _language_mismatch(alarm: AlarmContext, account: str, answered: str | None) -> str | None:
    """The timeline line, also logged as a warning, when CallOnAlarm's answer names another language
    than the one declared for ``account``: whether our message was sent was decided on a wrong belief."""
    declared = _declared_language(alarm, account)
    if not answered or answered == declared:
        return None
    site_key = alarm.site.key if alarm.site is not None else None
    if _site_connection(alarm, account) is not None:
        where = f'site "{site_key}" declares "{declared}" (language in [sites.{site_key}.callonalarm])'
    else:
        where = f'the bridge takes the monitoring centre\'s account as "{declared}" (site "{site_key}")'
    log.warning(
        "callonalarm.language_mismatch",
        site=site_key,
        account=account,
        declared=declared,
        account_language=answered,
    )
    return f'language mismatch: CallOnAlarm account {account} speaks "{answered}" but {where}'


def _message(alarm: AlarmContext, code: str, params: dict[str, Any]) -> str:
    """The voice/log message: what happened, where, and why a fallback is calling."""
    parts = [alarm.description or alarm.message or sia.lookup(code).description]
    if alarm.zone:
        parts.append(f"zone {alarm.zone}")
    text = ", ".join(parts)
    if params.get("fallback"):
        text += f"; fallback: {params.get('reason') or 'dispatch failed'}"
    if params.get("repeat_of"):
        text += f"; again: alert {params['repeat_of']} was cancelled by another alarm's restore"
    return text


def _restore_code(alarm: AlarmContext, params: dict[str, Any]) -> str:
    if params.get("code"):
        return str(params["code"])
    pairs = sia.restore_codes_for(alarm.code or ALTA_EVENT_CODE)
    restorals = [code for code in pairs if code.endswith("R")]
    if restorals:
        return restorals[0]
    return pairs[0] if pairs else CANCEL_EVENT_CODE
