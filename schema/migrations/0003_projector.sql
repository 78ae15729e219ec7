-- The projector's own bookkeeping. The read models themselves live in the
-- "read" schema, which the projector creates from schema/read_models.sql and
-- can rebuild beside the live one at any time (see projector/src/rebuild.rs).
CREATE SCHEMA IF NOT EXISTS projector;

-- Which generation of each projection is live, and how it was built.
CREATE TABLE projector.generations (
    projection   TEXT        PRIMARY KEY,
    generation   BIGINT      NOT NULL,
    ddl_hash     TEXT        NOT NULL,
    state        TEXT        NOT NULL DEFAULT 'LIVE',
    built_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Events a handler could not apply. The stream moves on (the version counts as
-- handled); `projector redrive` re-applies them after a fix.
CREATE TABLE projector.dead_letters (
    id            BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection    TEXT        NOT NULL,
    -- Null when the message could not even be decoded (then partition and
    -- offset say where it is on Kafka).
    event_id      UUID,
    stream_id     UUID,
    version       INTEGER,
    position      BIGINT,
    event_type    TEXT,
    kafka_partition INTEGER,
    kafka_offset  BIGINT,
    error         TEXT        NOT NULL,
    failed_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    redriven_at   TIMESTAMPTZ
);
CREATE UNIQUE INDEX dead_letters_event_key ON projector.dead_letters (projection, event_id) WHERE event_id IS NOT NULL;
CREATE INDEX dead_letters_open_idx ON projector.dead_letters (projection) WHERE redriven_at IS NULL;
