-- The event store: the source of truth. Every other table in the system can be
-- rebuilt from this one (except the command side's own state below).
CREATE SCHEMA IF NOT EXISTS event_store;

CREATE TABLE event_store.events (
    -- Global order of appends. Sequences commit out of order, so readers that
    -- need "everything before X" use (transaction_id, position), see the relay.
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Assigned when the appending transaction first writes; the relay reads only
    -- rows whose transaction is older than every transaction still running.
    transaction_id  XID8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        UUID        NOT NULL UNIQUE,
    stream_id       UUID        NOT NULL,
    stream_type     TEXT        NOT NULL,
    version         INTEGER     NOT NULL CHECK (version > 0),
    event_type      TEXT        NOT NULL,
    schema_version  SMALLINT    NOT NULL CHECK (schema_version > 0),
    payload         JSONB       NOT NULL,
    command_id      UUID        NOT NULL,
    correlation_id  UUID        NOT NULL,
    causation_id    UUID        NOT NULL,
    actor_id        UUID,
    -- Free-form context that is not part of the event's meaning (traceparent, request id).
    metadata        JSONB       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

CREATE INDEX events_relay_order_idx ON event_store.events (transaction_id, position);

-- Where the outbox relay has published up to: everything at or before
-- (transaction_id, position) is on Kafka.
CREATE TABLE event_store.relay_cursor (
    relay           TEXT        PRIMARY KEY,
    transaction_id  XID8        NOT NULL,
    position        BIGINT      NOT NULL,
    published_total BIGINT      NOT NULL DEFAULT 0,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Values unique across streams (email, handle, slug), claimed in the same
-- transaction as the append that introduces them.
CREATE TABLE event_store.unique_claims (
    kind        TEXT        NOT NULL,
    value       TEXT        NOT NULL,
    stream_id   UUID        NOT NULL,
    claimed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT unique_claims_pkey PRIMARY KEY (kind, value)
);
CREATE INDEX unique_claims_stream_idx ON event_store.unique_claims (stream_id);

-- The first outcome of a command sent with an Idempotency-Key, per caller.
CREATE TABLE event_store.idempotency_keys (
    caller        TEXT        NOT NULL,
    key           TEXT        NOT NULL,
    request_hash  TEXT        NOT NULL,
    response      JSONB       NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_expiry_idx ON event_store.idempotency_keys (expires_at);
