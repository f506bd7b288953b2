-- The ledgers the benchmarks start from: a mid-size monitoring centre's history, rendered by
-- .ci/bench_stack.py (render_seed) with one of its shapes, each {TOKEN} replaced by a number:
--
-- - YEAR, for `make bench-growth` (.ci/bench_growth.py): 5,000 accounts over 365 days; 300,000
--   alarms of which 204 are open; 1,000,000 events of which 404,677 opened no alarm (daily tests,
--   openings, closings, stray restores); 708,215 actions; 3,000,101 timeline lines. Seeded once at
--   the first schema revision (this script uses only its columns), so the same seeded database
--   measures the code before and after a migration: the bench copies it and runs `alarm-bridge db
--   upgrade` on the copy, as a production upgrade would.
-- - MONTH, for every phase of `make bench` (.ci/bench_stack.py, Services.prepare_template): 30 days,
--   30,000 alarms of which 20 are open, 75,000 events of which 15,000 opened none, 60,001 actions,
--   300,101 timeline lines (a finished self-test among them). A production ledger has history and
--   planner statistics (autovacuum keeps them); on a new, never-analysed database PostgreSQL plans
--   the prepared intake and worker statements for empty tables and keeps those plans while a
--   one-minute load grows the tables, so the run measured the planner's cold start, not the bridge.
--
-- Accounts bp-00..15 and bl-00..15 are the bench sites' own (.ci/bench_sites.toml), so the accounts
-- the load posts to carry history like every other; zones are z0..z7, and the benchmarks' own events
-- use zones of their own, so nothing here groups with them. References stay consistent (an
-- action's, event's and line's alarm is the same), so the retention command can be measured on the
-- result. Times increase with ids, as they do in production.

\set ON_ERROR_STOP on
SET synchronous_commit = off;  -- the seed only; the bench's own writes keep the server's setting

CREATE TEMP TABLE seed_clock AS SELECT now() - interval '{DAYS} days' AS t0, interval '{DAYS} days' AS span;

CREATE FUNCTION pg_temp.account_of(n bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN n % 5000 < 16 THEN 'bp-' || lpad((n % 5000)::text, 2, '0')
        WHEN n % 5000 < 32 THEN 'bl-' || lpad((n % 5000 - 16)::text, 2, '0')
        ELSE 'acct-' || lpad((n % 5000)::text, 4, '0')
    END
$$;
CREATE FUNCTION pg_temp.site_of(n bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN n % 5000 < 16 THEN 'bench-property'
        WHEN n % 5000 < 32 THEN 'bench-life'
        ELSE 'site-' || ((n % 5000) / 10)::text
    END
$$;

-- The alarms: 10 % fire (life safety), 70 % burglary, 20 % trouble; the last {OPEN} still open.
INSERT INTO alarms (id, site_key, source_key, account, zone, code, description, family, priority, state,
                    outcome, needs_person_reason, verification, event_count, opened_at, last_event_at,
                    restored_at, verified_at, acknowledged_at, ended_at, refs)
SELECT g, pg_temp.site_of(g), 'bench-panels', pg_temp.account_of(g), 'z' || (g % 8),
       c.code, c.description, c.family, c.priority,
       CASE WHEN g > {ALARMS} - {OPEN} THEN 'open' ELSE 'ended' END,
       CASE WHEN g > {ALARMS} - {OPEN} THEN NULL WHEN g % 7 = 0 THEN 'false_alarm' ELSE 'dispatched' END,
       NULL, NULL, 2, at, at + interval '30 seconds', NULL, NULL, at + interval '2 minutes',
       CASE WHEN g > {ALARMS} - {OPEN} THEN NULL ELSE at + interval '10 minutes' END,
       '{"tracktik_alarm_id": "seeded"}'::jsonb
FROM generate_series(1, {ALARMS}) AS g,
     LATERAL (SELECT (SELECT t0 FROM seed_clock) + (SELECT span FROM seed_clock) * (g / ({ALARMS} + 1.0)) AS at) AS t,
     LATERAL (SELECT * FROM (VALUES
         (0, 'FA', 'Fire alarm', 'fire', 'life_safety'),
         (1, 'BA', 'Burglary alarm', 'burglary', 'property'),
         (2, 'AT', 'AC trouble', 'trouble', 'technical')) AS v(k, code, description, family, priority)
         WHERE v.k = CASE WHEN g % 10 = 0 THEN 0 WHEN g % 10 < 8 THEN 1 ELSE 2 END) AS c;
SELECT setval(pg_get_serial_sequence('alarms', 'id'), {ALARMS});

-- Events that opened or joined those alarms (event id a belongs to alarm a), then events that
-- opened none: automatic tests, openings, closings and restores, spread over the whole time.
INSERT INTO events (id, dedupe_key, source, sender_event_id, received_at, occurred_at, clock_skew_s, account,
                    zone, code, site_key, payload, alarm_id)
SELECT g, 'seed:' || g, 'bench-panels', 'seed-' || g, a.opened_at + CASE WHEN g > {ALARMS} THEN interval '30 seconds' ELSE interval '0' END,
       a.opened_at, 0.0, a.account, a.zone, a.code, a.site_key,
       jsonb_build_object('account', a.account, 'code', a.code, 'zone', a.zone, 'message', 'Seeded signal'),
       a.id
FROM generate_series(1, {ATTACHED}) AS g JOIN alarms AS a ON a.id = ((g - 1) % {ALARMS}) + 1;

INSERT INTO events (id, dedupe_key, source, sender_event_id, received_at, occurred_at, clock_skew_s, account,
                    zone, code, site_key, payload, alarm_id)
SELECT {ATTACHED} + g, 'seed:u' || g, 'bench-panels', 'seed-u' || g, at, at, 0.0, pg_temp.account_of(g),
       'z' || (g % 8), c.code, pg_temp.site_of(g),
       jsonb_build_object('account', pg_temp.account_of(g), 'code', c.code, 'message', 'Seeded routine signal'),
       NULL
FROM generate_series(1, {ROUTINE}) AS g,
     LATERAL (SELECT (SELECT t0 FROM seed_clock) + (SELECT span FROM seed_clock) * (g / ({ROUTINE} + 1.0)) AS at) AS t,
     LATERAL (SELECT (ARRAY['RP', 'OP', 'CL', 'BR'])[1 + g % 4] AS code) AS c;
SELECT setval(pg_get_serial_sequence('events', 'id'), {ATTACHED} + {ROUTINE});

-- The actions: action ids a, a + {ALARMS} and a + 2 * {ALARMS} belong to alarm a. Mostly succeeded;
-- about 1 % failed for good (the dead-letter view), 3 % cancelled; none live (the open alarms' steps
-- are done), so the dispatcher and watchdog read nothing but their indexes.
INSERT INTO actions (id, alarm_id, kind, target, queue, state, due_at, enqueued_at, attempts, max_attempts,
                     lease_token, lease_until, cancellable, idempotency_key, outcome_unknown, external_id,
                     last_error, params, result, created_at, updated_at, completed_at)
SELECT g, a.id, k.kind, split_part(k.kind, '.', 1), CASE WHEN a.priority = 'life_safety' THEN 'life_safety' ELSE 'default' END,
       s.state, a.opened_at, a.opened_at, 1, 8, NULL, NULL, k.kind = 'callonalarm.trigger', 'seed-' || g, false,
       CASE WHEN s.state = 'succeeded' THEN 'ext-' || g END,
       CASE WHEN s.state = 'failed' THEN 'HTTP 422: seeded permanent error' END,
       jsonb_build_object('step', (g - 1) / {ALARMS}), NULL, a.opened_at, a.opened_at + interval '1 minute',
       a.opened_at + interval '1 minute'
FROM generate_series(1, {ACTIONS}) AS g
JOIN alarms AS a ON a.id = ((g - 1) % {ALARMS}) + 1,
     LATERAL (SELECT (ARRAY['tracktik.create_alarm', 'cad.upload_incident', 'callonalarm.trigger'])[1 + (g - 1) / {ALARMS}] AS kind) AS k,
     LATERAL (SELECT CASE WHEN g % 97 = 0 THEN 'failed' WHEN g % 31 = 0 THEN 'cancelled' ELSE 'succeeded' END AS state) AS s;
SELECT setval(pg_get_serial_sequence('actions', 'id'), {ACTIONS});

-- One finished self-test (alarm_id NULL) with 101 lines: GET /v1/system/selftest/<id> reads them.
INSERT INTO actions (id, alarm_id, kind, target, queue, state, due_at, enqueued_at, attempts, max_attempts,
                     cancellable, idempotency_key, outcome_unknown, params, created_at, updated_at, completed_at)
SELECT {ACTIONS} + 1, NULL, 'system.selftest', 'system', 'default', 'succeeded', t0, t0, 1, 8, false, 'seed-selftest',
       false, '{}'::jsonb, t0, t0, t0
FROM seed_clock;
SELECT setval(pg_get_serial_sequence('actions', 'id'), {ACTIONS} + 1);

-- Ten lines per alarm (the opening, its steps, their outcomes), and the self-test's 101.
INSERT INTO timeline_entries (alarm_id, action_id, event_id, at, kind, message, data)
SELECT a, CASE WHEN k BETWEEN 1 AND 6 AND a + {ALARMS} * ((k - 1) % 3) <= {ACTIONS} THEN a + {ALARMS} * ((k - 1) % 3) END,
       CASE WHEN k = 0 THEN a END, at.at + k * interval '5 seconds',
       (ARRAY['alarm.opened', 'action.planned', 'action.planned', 'action.planned', 'action.succeeded',
              'action.succeeded', 'action.succeeded', 'alarm.repeated', 'alarm.acknowledged', 'alarm.ended'])[k + 1],
       'seeded timeline line', '{}'::jsonb
FROM generate_series(0, 10 * {ALARMS} - 1) AS g,
     LATERAL (SELECT ((g % {ALARMS}) + 1)::int AS a, (g / {ALARMS})::int AS k) AS ak,
     LATERAL (SELECT (SELECT t0 FROM seed_clock) + (SELECT span FROM seed_clock) * (a / ({ALARMS} + 1.0)) AS at) AS at;

INSERT INTO timeline_entries (alarm_id, action_id, event_id, at, kind, message, data)
SELECT NULL, {ACTIONS} + 1, NULL, t0 + g * interval '1 second', 'selftest.step', 'seeded self-test line', '{}'::jsonb
FROM seed_clock, generate_series(1, 101) AS g;
