-- A session is one sign-in: its refresh-token family, and every access token
-- issued in it (their `sid` claim). Ending it (logout, a refresh token
-- reused, the account deactivated) ends those access tokens at once, not when
-- they expire: every command checks its session.
CREATE TABLE auth.sessions (
    id          UUID        PRIMARY KEY,
    user_id     UUID        NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX sessions_user_idx ON auth.sessions (user_id) WHERE revoked_at IS NULL;

INSERT INTO auth.sessions (id, user_id, started_at, revoked_at)
SELECT family_id, min(user_id::text)::uuid, min(issued_at),
       CASE WHEN bool_or(revoked_at IS NOT NULL) THEN max(revoked_at) END
FROM auth.refresh_tokens
GROUP BY family_id;
