-- tempctl event log: the single source of the schema.
--
-- Every reading, transition, command and notable event is appended here; nothing
-- is ever updated or deleted (triggers below refuse it), so the log is a faithful
-- recording that `tempctl replay` can feed back through the controller.
-- Times are UTC epoch milliseconds (ts_ms). The daemon stamps them from a
-- monotonic clock anchored to the wall clock at start, so they never go backwards
-- within a run (see tempctl/clock.py).
--
-- Applied by tempctl/log.py on open; every statement is idempotent. Later schema
-- changes are numbered migrations in tempctl/log.py (PRAGMA user_version).

CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- One row per daemon (or replay/simulation) start.
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL DEFAULT 'daemon' CHECK (kind IN ('daemon', 'simulation', 'replay', 'import')),
    version TEXT NOT NULL,
    hostname TEXT,
    pid INTEGER,
    config TEXT NOT NULL,          -- JSON: effective settings
    sources TEXT                   -- JSON: where each setting came from
) STRICT;

-- One row per poll of a device (valid or not) and per backfilled sample.
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    run_id INTEGER REFERENCES runs(id),
    device TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    valid INTEGER NOT NULL CHECK (valid IN (0, 1)),
    temp REAL,                     -- °C, NULL unless valid
    vr_temp REAL,                  -- °C voltage regulator, NULL when absent/implausible
    frequency REAL,                -- MHz, device setting
    actual_frequency REAL,         -- MHz, live PLL (firmware v2.14+)
    core_voltage INTEGER,          -- mV setting
    core_voltage_actual INTEGER,   -- mV measured
    hashrate REAL,                 -- GH/s
    power REAL,                    -- W
    fan REAL,                      -- % duty
    fan_rpm INTEGER,
    uptime_s INTEGER,
    raw_temp REAL,                 -- what the device reported, even when implausible
    firmware TEXT,                 -- AxeOS version, e.g. v2.15.0 (decides live change vs restart)
    asic TEXT,                     -- ASIC model, e.g. BM1370
    overheat INTEGER NOT NULL DEFAULT 0 CHECK (overheat IN (0, 1)),
    backfilled INTEGER NOT NULL DEFAULT 0 CHECK (backfilled IN (0, 1)),
    error TEXT,                    -- why the reading is not valid / what was wrong
    autofan INTEGER CHECK (autofan IN (0, 1)),  -- firmware fan PID on (schema v2)
    fault TEXT,                    -- mining stopped: power_fault | hardware_fault | pool_down (v2)
    mac TEXT,                      -- identity, to tell a swapped device at the same address (v2)
    hostname TEXT,
    firmware_floor TEXT,           -- newest release whose info keys it shows (odd versions) (v2)
    error_pct REAL,                -- errorPercentage, v2.11+ (v3, issue 21: the voltage governor)
    expected_hashrate REAL         -- expectedHashrate: the stability signal before v2.11 (v3)
) STRICT;

-- The stable-window query reads one device's recent rows in time order.
CREATE INDEX IF NOT EXISTS readings_device_ts ON readings (device, ts_ms);

-- State-machine decisions. Every firing of the control law is a row, including
-- RECOVERING -> RECOVERING steps, so the latest row restores the controller.
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY,
    run_id INTEGER REFERENCES runs(id),
    device TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL CHECK (to_state IN ('NORMAL', 'THROTTLED_1', 'THROTTLED_2', 'RECOVERING')),
    reason TEXT NOT NULL,
    frequency REAL,                -- MHz the controller targets after this transition
    temp REAL,                     -- the reading that triggered it
    ceiling REAL,                  -- MHz not to retry before ceiling_until_ms
    ceiling_until_ms INTEGER,
    backoff_s REAL,                -- current back-off length (doubles on each failed recovery)
    last_good REAL                 -- MHz that last held while recovering
) STRICT;

CREATE INDEX IF NOT EXISTS transitions_device_ts ON transitions (device, ts_ms);

-- Command intents, committed before anything is sent to the device.
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY,
    run_id INTEGER REFERENCES runs(id),
    device TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('set_frequency', 'restart', 'set_fields')),
    frequency REAL,
    payload TEXT,                  -- JSON body for PATCH
    reason TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1
) STRICT;

CREATE INDEX IF NOT EXISTS commands_device_ts ON commands (device, ts_ms);

-- Outcomes, appended after the request finished (or failed).
CREATE TABLE IF NOT EXISTS command_results (
    id INTEGER PRIMARY KEY,
    command_id INTEGER NOT NULL REFERENCES commands(id),
    ts_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'failed', 'dry_run', 'skipped')),
    status INTEGER,                -- HTTP status when there was one
    error TEXT,
    latency_ms REAL
) STRICT;

CREATE INDEX IF NOT EXISTS command_results_command ON command_results (command_id);

-- Everything else worth knowing: alarms, frequency changes made by the firmware
-- or a user, reboots, identity changes, reconciliation at start, clock jumps.
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    run_id INTEGER REFERENCES runs(id),
    device TEXT,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,            -- alarm | frequency_change | reboot | identity | reconcile | verify | restart | clock | gap | log | note
    level TEXT NOT NULL DEFAULT 'info' CHECK (level IN ('debug', 'info', 'warning', 'alarm')),
    origin TEXT CHECK (origin IN ('tempctl', 'firmware', 'user', 'device', 'daemon', 'mqtt')),
    frequency_from REAL,
    frequency_to REAL,
    message TEXT NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS events_device_ts ON events (device, ts_ms);

-- Raw readings older than TEMPCTL_RETENTION_DAYS folded into one row per minute.
CREATE TABLE IF NOT EXISTS readings_1m (
    device TEXT NOT NULL,
    minute_ms INTEGER NOT NULL,
    n INTEGER NOT NULL,
    n_valid INTEGER NOT NULL,
    temp_avg REAL,
    temp_max REAL,
    vr_temp_max REAL,
    frequency REAL,
    hashrate_avg REAL,
    power_avg REAL,
    fan_avg REAL,
    PRIMARY KEY (device, minute_ms)
) STRICT;

-- History is append-only. Retention (tempctl prune) is the one sanctioned way to
-- remove raw readings, and it works by folding them into readings_1m first; it
-- lifts the guard for its own transaction through the meta row below.
CREATE TRIGGER IF NOT EXISTS readings_no_update BEFORE UPDATE ON readings
BEGIN SELECT RAISE(ABORT, 'readings are append-only'); END;
CREATE TRIGGER IF NOT EXISTS readings_no_delete BEFORE DELETE ON readings
WHEN (SELECT value FROM meta WHERE key = 'pruning') IS NOT '1'
BEGIN SELECT RAISE(ABORT, 'readings are append-only (use tempctl prune)'); END;
CREATE TRIGGER IF NOT EXISTS transitions_no_update BEFORE UPDATE ON transitions
BEGIN SELECT RAISE(ABORT, 'transitions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS transitions_no_delete BEFORE DELETE ON transitions
BEGIN SELECT RAISE(ABORT, 'transitions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS commands_no_update BEFORE UPDATE ON commands
BEGIN SELECT RAISE(ABORT, 'commands are append-only'); END;
CREATE TRIGGER IF NOT EXISTS commands_no_delete BEFORE DELETE ON commands
BEGIN SELECT RAISE(ABORT, 'commands are append-only'); END;
CREATE TRIGGER IF NOT EXISTS command_results_no_update BEFORE UPDATE ON command_results
BEGIN SELECT RAISE(ABORT, 'command results are append-only'); END;
CREATE TRIGGER IF NOT EXISTS command_results_no_delete BEFORE DELETE ON command_results
BEGIN SELECT RAISE(ABORT, 'command results are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS runs_no_delete BEFORE DELETE ON runs
BEGIN SELECT RAISE(ABORT, 'runs are append-only'); END;

-- Views for people (Datasette) ----------------------------------------------

-- Commands with their outcome.
CREATE VIEW IF NOT EXISTS command_log AS
SELECT c.id, c.device, c.ts_ms, datetime(c.ts_ms / 1000, 'unixepoch') AS time_utc,
       c.kind, c.frequency, c.reason, c.attempt,
       r.outcome, r.status, r.error, r.latency_ms
FROM commands c LEFT JOIN command_results r ON r.command_id = c.id;

-- State segments: each transition until the next one of the same device.
CREATE VIEW IF NOT EXISTS state_segments AS
SELECT device, to_state AS state, frequency, reason,
       ts_ms AS start_ms,
       datetime(ts_ms / 1000, 'unixepoch') AS start_utc,
       LEAD(ts_ms) OVER (PARTITION BY device ORDER BY ts_ms, id) AS end_ms,
       round((COALESCE(LEAD(ts_ms) OVER (PARTITION BY device ORDER BY ts_ms, id),
                       (SELECT max(ts_ms) FROM readings r WHERE r.device = t.device)) - ts_ms) / 60000.0, 2)
           AS duration_min
FROM transitions t;

-- One-minute aggregates of the raw readings (plus folded history).
CREATE VIEW IF NOT EXISTS readings_minute AS
SELECT device, (ts_ms / 60000) * 60000 AS minute_ms,
       datetime((ts_ms / 60000) * 60, 'unixepoch') AS minute_utc,
       count(*) AS n, sum(valid) AS n_valid,
       round(avg(temp), 2) AS temp_avg, max(temp) AS temp_max, max(vr_temp) AS vr_temp_max,
       max(frequency) AS frequency, round(avg(hashrate), 1) AS hashrate_avg,
       round(avg(power), 2) AS power_avg, round(avg(fan), 1) AS fan_avg
FROM readings GROUP BY device, ts_ms / 60000
UNION ALL
SELECT device, minute_ms, datetime(minute_ms / 1000, 'unixepoch'), n, n_valid,
       temp_avg, temp_max, vr_temp_max, frequency, hashrate_avg, power_avg, fan_avg
FROM readings_1m;

-- The limits each run worked with: one row per device named in the run's config
-- (its overrides applied), plus device '*' with the run-wide values.
CREATE VIEW IF NOT EXISTS run_limits AS
WITH d AS (
    SELECT id AS run_id, ts_ms, kind, config, '*' AS device, NULL AS overrides FROM runs
    UNION ALL
    SELECT r.id, r.ts_ms, r.kind, r.config, json_extract(j.value, '$.name'),
           json_extract(j.value, '$.overrides')
    FROM runs r, json_each(r.config, '$.devices') j
)
SELECT run_id, device, kind, datetime(ts_ms / 1000, 'unixepoch') AS run_start_utc,
       coalesce(json_extract(overrides, '$.temp_threshold'),
                json_extract(config, '$.temp_threshold')) AS temp_threshold,
       coalesce(json_extract(overrides, '$.hysteresis'),
                json_extract(config, '$.hysteresis')) AS hysteresis,
       coalesce(json_extract(overrides, '$.critical'),
                json_extract(config, '$.critical')) AS critical,
       coalesce(json_extract(overrides, '$.vr_threshold'),
                json_extract(config, '$.vr_threshold')) AS vr_threshold,
       coalesce(json_extract(overrides, '$.max_frequency'),
                json_extract(config, '$.max_frequency')) AS max_frequency,
       coalesce(json_extract(overrides, '$.first_frequency'),
                json_extract(config, '$.first_frequency')) AS first_frequency,
       coalesce(json_extract(overrides, '$.second_frequency'),
                json_extract(config, '$.second_frequency')) AS second_frequency,
       coalesce(json_extract(overrides, '$.stable_timeframe'),
                json_extract(config, '$.stable_timeframe')) AS stable_timeframe,
       coalesce(json_extract(overrides, '$.check_interval'),
                json_extract(config, '$.check_interval')) AS check_interval,
       coalesce(json_extract(overrides, '$.settle'),
                json_extract(config, '$.settle')) AS settle
FROM d;

-- Consecutive transitions into the same state merged into one period (the
-- RECOVERING steps become one), until the next state or the newest reading.
CREATE VIEW IF NOT EXISTS state_periods AS
WITH seg AS (
    SELECT device, to_state AS state, ts_ms, id, frequency,
           LAG(to_state) OVER w AS prev_state, LEAD(ts_ms) OVER w AS next_ms
    FROM transitions WINDOW w AS (PARTITION BY device ORDER BY ts_ms, id)
), numbered AS (
    SELECT *, sum(prev_state IS NOT state) OVER (PARTITION BY device ORDER BY ts_ms, id) AS n
    FROM seg
), periods AS (
    SELECT device, state, min(ts_ms) AS start_ms,
           max(coalesce(next_ms, (SELECT max(r.ts_ms) FROM readings r
                                  WHERE r.device = numbered.device))) AS end_ms,
           count(*) AS transitions, min(frequency) AS min_frequency,
           max(frequency) AS max_frequency, max(next_ms IS NULL) AS current
    FROM numbered GROUP BY device, n
)
SELECT device, state, start_ms, max(end_ms, start_ms) AS end_ms,
       datetime(start_ms / 1000, 'unixepoch') AS start_utc,
       datetime(max(end_ms, start_ms) / 1000, 'unixepoch') AS end_utc,
       round((max(end_ms, start_ms) - start_ms) / 3600000.0, 3) AS hours,
       transitions, min_frequency, max_frequency, current
FROM periods;

-- Each state segment (a transition until the device's next one, or its newest
-- reading) split at UTC midnight, so time in state adds up per day.
CREATE VIEW IF NOT EXISTS state_days AS
WITH RECURSIVE seg AS (
    SELECT id, run_id, device, to_state AS state, frequency, ts_ms AS start_ms,
           coalesce(LEAD(ts_ms) OVER (PARTITION BY device ORDER BY ts_ms, id),
                    (SELECT max(r.ts_ms) FROM readings r WHERE r.device = t.device)) AS end_ms
    FROM transitions t
), piece AS (
    SELECT id, run_id, device, state, frequency, start_ms, max(end_ms, start_ms) AS seg_end_ms,
           start_ms - start_ms % 86400000 AS day_ms
    FROM seg
    UNION ALL
    SELECT id, run_id, device, state, frequency, day_ms + 86400000, seg_end_ms, day_ms + 86400000
    FROM piece WHERE day_ms + 86400000 < seg_end_ms
)
SELECT device, date(day_ms / 1000, 'unixepoch') AS day, state, frequency,
       start_ms, min(seg_end_ms, day_ms + 86400000) AS end_ms,
       round((min(seg_end_ms, day_ms + 86400000) - start_ms) / 3600000.0, 4) AS hours,
       id AS transition_id, run_id
FROM piece;

-- The frequency a user set by hand in AxeOS that tempctl keeps as a cap
-- (TEMPCTL_USER_CAP=keep; core/usercap.py): each device's latest 'user_cap' event,
-- while it holds a cap (frequency_to is NULL once the cap was lifted). until_utc uses
-- the latest run's TEMPCTL_USER_CAP_HOURS (0: until the user raises it in AxeOS).
CREATE VIEW IF NOT EXISTS user_caps AS
WITH latest AS (
    SELECT * FROM events
    WHERE id IN (SELECT max(id) FROM events WHERE kind = 'user_cap' GROUP BY device)
), run AS (
    SELECT coalesce(json_extract(config, '$.user_cap_hours'), 0) AS hours
    FROM runs ORDER BY id DESC LIMIT 1
)
SELECT l.device, l.frequency_to AS cap_mhz, l.ts_ms AS set_ms,
       datetime(l.ts_ms / 1000, 'unixepoch') AS set_utc,
       CASE WHEN run.hours > 0
            THEN datetime(l.ts_ms / 1000 + run.hours * 3600, 'unixepoch') END AS until_utc,
       printf('user cap %g MHz, set in AxeOS at %s UTC', l.frequency_to,
              datetime(l.ts_ms / 1000, 'unixepoch')) AS shown,
       l.message
FROM latest l LEFT JOIN run ON 1
WHERE l.frequency_to IS NOT NULL;
