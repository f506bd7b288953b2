-- The ledger every `make bench` phase starts from (.ci/bench_stack.py, Services.prepare_template):
-- a month of a mid-size monitoring centre, on the current schema, then VACUUM ANALYZE.
--
-- Why not an empty ledger: a production ledger has history and planner statistics (autovacuum keeps
-- them). On a new, never-analysed database PostgreSQL plans the prepared intake and worker
-- statements for empty tables (sequential scans of events, the wrong alarms index) and keeps those
-- plans while a one-minute load grows the tables: the run then measured the planner's cold start,
-- not the bridge (PostgreSQL CPU per alarm about twice the analysed ledger's, and rising with the
-- run). The year (`make bench-growth`) is measured on its own.
--
-- Shape: 5,000 accounts over 30 days; 30,000 alarms (10 % fire, 70 % burglary, 20 % trouble), the
-- last 20 still open; 60,000 events that opened or joined them and 15,000 that opened none (tests,
-- openings, closings: alarm_id stays NULL, as in production); 60,000 finished actions; 300,000
-- timeline lines. Accounts bp-00..15 and bl-00..15 are the bench sites' own (.ci/bench_sites.toml),
-- so the accounts the load posts to carry history like every other. Zones are z0..z7: the bench's
-- own events use zones of their own, so nothing here groups with them.

\set ON_ERROR_STOP on
SET synchronous_commit = off;  -- the seed only; the bench's own writes keep the server's setting

CREATE TEMP TABLE seed_clock AS SELECT now() - interval '30 days' AS t0, interval '30 days' AS span;

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

INSERT INTO alarms (id, site_key, source_key, account, zone, code, description, family, priority, state,
                    outcome, event_count, opened_at, last_event_at, acknowledged_at, ended_at, refs)
SELECT g, pg_temp.site_of(g), 'bench-panels', pg_temp.account_of(g), 'z' || (g % 8),
       c.code, c.description, c.family, c.priority,
       CASE WHEN g > 30000 - 20 THEN 'open' ELSE 'ended' END,
       CASE WHEN g > 30000 - 20 THEN NULL WHEN g % 7 = 0 THEN 'false_alarm' ELSE 'dispatched' END,
       2, at, at + interval '30 seconds', at + interval '2 minutes',
       CASE WHEN g > 30000 - 20 THEN NULL ELSE at + interval '10 minutes' END,
       '{"tracktik_alarm_id": "seeded"}'::jsonb
FROM generate_series(1, 30000) AS g,
     LATERAL (SELECT (SELECT t0 FROM seed_clock) + (SELECT span FROM seed_clock) * (g / 30001.0) AS at) AS t,
     LATERAL (SELECT * FROM (VALUES
         (0, 'FA', 'Fire alarm', 'fire', 'life_safety'),
         (1, 'BA', 'Burglary alarm', 'burglary', 'property'),
         (2, 'AT', 'AC trouble', 'trouble', 'technical')) AS v(k, code, description, family, priority)
         WHERE v.k = CASE WHEN g % 10 = 0 THEN 0 WHEN g % 10 < 8 THEN 1 ELSE 2 END) AS c;
SELECT setval(pg_get_serial_sequence('alarms', 'id'), 30000);

INSERT INTO events (id, dedupe_key, source, sender_event_id, received_at, occurred_at, clock_skew_s, account,
                    zone, code, site_key, payload, alarm_id)
SELECT g, 'seed:' || g, 'bench-panels', 'seed-' || g, a.opened_at + CASE WHEN g > 30000 THEN interval '30 seconds' ELSE interval '0' END,
       a.opened_at, 0.0, a.account, a.zone, a.code, a.site_key,
       jsonb_build_object('account', a.account, 'code', a.code, 'zone', a.zone, 'message', 'Seeded signal'),
       a.id
FROM generate_series(1, 60000) AS g JOIN alarms AS a ON a.id = ((g - 1) % 30000) + 1;

INSERT INTO events (id, dedupe_key, source, sender_event_id, received_at, occurred_at, clock_skew_s, account,
                    zone, code, site_key, payload, alarm_id)
SELECT 60000 + g, 'seed:u' || g, 'bench-panels', 'seed-u' || g, at, at, 0.0, pg_temp.account_of(g),
       'z' || (g % 8), c.code, pg_temp.site_of(g),
       jsonb_build_object('account', pg_temp.account_of(g), 'code', c.code, 'message', 'Seeded routine signal'),
       NULL
FROM generate_series(1, 15000) AS g,
     LATERAL (SELECT (SELECT t0 FROM seed_clock) + (SELECT span FROM seed_clock) * (g / 15001.0) AS at) AS t,
     LATERAL (SELECT (ARRAY['RP', 'OP', 'CL', 'BR'])[1 + g % 4] AS code) AS c;
SELECT setval(pg_get_serial_sequence('events', 'id'), 75000);

-- Two finished steps per alarm (action ids a and a + 30,000 belong to alarm a): mostly succeeded,
-- about 1 % failed for good, 3 % cancelled; none live.
INSERT INTO actions (id, alarm_id, kind, target, queue, state, due_at, enqueued_at, attempts, max_attempts,
                     cancellable, idempotency_key, outcome_unknown, external_id, last_error, params,
                     created_at, updated_at, completed_at)
SELECT g, a.id, k.kind, split_part(k.kind, '.', 1),
       CASE WHEN a.priority = 'life_safety' THEN 'life_safety' ELSE 'default' END,
       s.state, a.opened_at, a.opened_at, 1, 8, false, 'seed-' || g, false,
       CASE WHEN s.state = 'succeeded' THEN 'ext-' || g END,
       CASE WHEN s.state = 'failed' THEN 'HTTP 422: seeded permanent error' END,
       jsonb_build_object('step', (g - 1) / 30000), a.opened_at, a.opened_at + interval '1 minute',
       a.opened_at + interval '1 minute'
FROM generate_series(1, 60000) AS g
JOIN alarms AS a ON a.id = ((g - 1) % 30000) + 1,
     LATERAL (SELECT (ARRAY['tracktik.create_alarm', 'cad.upload_incident'])[1 + (g - 1) / 30000] AS kind) AS k,
     LATERAL (SELECT CASE WHEN g % 97 = 0 THEN 'failed' WHEN g % 31 = 0 THEN 'cancelled' ELSE 'succeeded' END AS state) AS s;
SELECT setval(pg_get_serial_sequence('actions', 'id'), 60000);

-- Ten lines per alarm: the opening, its steps, their outcomes, the acknowledge and the end.
INSERT INTO timeline_entries (alarm_id, action_id, event_id, at, kind, message, data)
SELECT a, CASE WHEN k BETWEEN 1 AND 4 THEN a + 30000 * ((k - 1) % 2) END,
       CASE WHEN k = 0 THEN a END, at.at + k * interval '5 seconds',
       (ARRAY['alarm.opened', 'action.planned', 'action.planned', 'action.succeeded', 'action.succeeded',
              'alarm.repeated', 'alarm.repeated', 'alarm.acknowledged', 'alarm.ended', 'alarm.ended'])[k + 1],
       'seeded timeline line', '{}'::jsonb
FROM generate_series(0, 299999) AS g,
     LATERAL (SELECT ((g % 30000) + 1)::int AS a, (g / 30000)::int AS k) AS ak,
     LATERAL (SELECT (SELECT t0 FROM seed_clock) + (SELECT span FROM seed_clock) * (a / 30001.0) AS at) AS at;
