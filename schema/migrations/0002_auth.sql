-- Command-side state that is deliberately not event-sourced: secrets never go
-- into events (events are immutable and are published to Kafka).
CREATE SCHEMA IF NOT EXISTS auth;

CREATE TABLE auth.credentials (
    user_id        UUID        PRIMARY KEY,
    password_hash  TEXT        NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Refresh tokens are stored as SHA-256 hashes. A family is one login's chain of
-- rotations; presenting a spent token revokes the whole family.
CREATE TABLE auth.refresh_tokens (
    token_hash   TEXT        PRIMARY KEY,
    family_id    UUID        NOT NULL,
    user_id      UUID        NOT NULL,
    issued_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    spent_at     TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_family_idx ON auth.refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON auth.refresh_tokens (user_id);

-- Failed logins, per account and per client, for brute-force limiting.
CREATE TABLE auth.login_failures (
    id          BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       TEXT        NOT NULL,
    client      TEXT        NOT NULL,
    failed_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_email_idx ON auth.login_failures (email, failed_at);
CREATE INDEX login_failures_client_idx ON auth.login_failures (client, failed_at);
