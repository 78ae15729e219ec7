-- Request counts per client and per user, per minute, shared by every
-- query-service replica (each adds what it let through every few hundred ms),
-- so N replicas do not allow N times the limit. Unlogged: a crash loses at
-- most a minute of counts, and the writes cost no WAL.
CREATE SCHEMA IF NOT EXISTS limits;

CREATE UNLOGGED TABLE limits.request_windows (
    key text NOT NULL,
    -- Minutes since the Unix epoch.
    window_start bigint NOT NULL,
    count integer NOT NULL,
    PRIMARY KEY (key, window_start)
);
