-- Personal data, sealed per person (crypto-shredding; docs/privacy.md).

CREATE SCHEMA IF NOT EXISTS privacy;

-- One key per person, apart from the events: destroying it (erasure) leaves
-- every sealed value of theirs unreadable, in the store, on Kafka and in
-- backups of either. Never logged, never on the bus.
CREATE TABLE privacy.subject_keys (
    subject_id  UUID        PRIMARY KEY,
    key         BYTEA       NOT NULL CHECK (length(key) = 32),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Who was erased, when and by whom: ids only. An erased person never gets
-- a key again.
CREATE TABLE privacy.erasures (
    subject_id  UUID        PRIMARY KEY,
    erased_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    erased_by   UUID        NOT NULL
);

-- A person's key is made and destroyed under this lock (class "PRIV", key:
-- the subject): a key is never made again for someone being erased.
CREATE FUNCTION privacy.key_lock_class() RETURNS int
    LANGUAGE sql IMMUTABLE AS $$ SELECT 1347570006 $$;

-- Failed sign-ins are counted per account by a keyed digest of the email:
-- the table keeps no email (the rows are minutes old; they start again).
DELETE FROM auth.login_failures;
ALTER TABLE auth.login_failures RENAME COLUMN email TO account;
ALTER INDEX auth.login_failures_email_idx RENAME TO login_failures_account_idx;

-- Takes these streams' locks exclusively, one at a time in the one global
-- order (as `append_batch` does): an erasure closes many streams at once.
CREATE FUNCTION event_store.lock_streams(p_streams uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    stream uuid;
BEGIN
    FOR stream IN SELECT DISTINCT s FROM unnest(p_streams) AS s ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(stream::text, 7));
    END LOOP;
END $$;

-- The streams a person created (posts, comments): what an erasure closes.
CREATE INDEX events_author_streams_idx ON event_store.events ((payload->>'authorId'))
    WHERE version = 1 AND stream_type IN ('post', 'comment');

-- A claim may carry its candidates sealed (`values`, one per candidate), so
-- the value written into the event is the sealed one: a post's slug is
-- derived from its title and is as personal.
CREATE OR REPLACE FUNCTION event_store.append(
    p_stream_id        uuid,
    p_stream_type      text,
    p_base_version     int,
    p_event_ids        uuid[],
    p_event_types      text[],
    p_schema_versions  int2[],
    p_payloads         jsonb[],
    p_command_id       uuid,
    p_correlation_id   uuid,
    p_actor_id         uuid,
    p_metadata         jsonb,
    -- The session the actor signs in with (null: no actor).
    p_session_id       uuid,
    -- Streams the decision read, at the versions it read them; 1 takes the
    -- stream's lock shared, 2 exclusively, 0 none. Sorted by the caller, one
    -- entry per stream: locks are always taken in one order. The target is
    -- locked exclusively in any case; list it (exclusive) if it was read.
    p_read_streams     uuid[],
    p_read_versions    int[],
    p_read_locks       int[],
    -- [{"kind": "slug", "candidates": ["a", "a-2"], "field": "slug"}]: the
    -- first free candidate is claimed for the stream (and written into the
    -- first event's payload at `field`, when given).
    p_claims           jsonb,
    p_idempotency_caller text,
    p_idempotency_key    text,
    p_fingerprint        text,
    p_idempotency_ttl    float8
) RETURNS TABLE (outcome text, version int, detail text, stored jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    found_hash  text;
    found_reply jsonb;
    current     int;
    claim       jsonb;
    candidate   text;
    chosen      text;
    chosen_at   int;
    n           int;
    taken       text[] := '{}';
    payloads    jsonb[] := p_payloads;
    events      int := coalesce(array_length(p_event_ids, 1), 0);
BEGIN
    PERFORM pg_advisory_xact_lock_shared(event_store.appenders_key());

    IF p_idempotency_key IS NOT NULL THEN
        -- The two-key form: a space of its own, apart from the streams' locks.
        PERFORM pg_advisory_xact_lock(event_store.idempotency_lock_class(),
                                      hashtext(p_idempotency_caller || ':' || p_idempotency_key));
        SELECT k.request_hash, k.response INTO found_hash, found_reply
        FROM event_store.idempotency_keys k
        WHERE k.caller = p_idempotency_caller AND k.key = p_idempotency_key AND k.expires_at > now();
        IF FOUND THEN
            IF found_hash <> p_fingerprint THEN
                RETURN QUERY SELECT 'key_reused'::text, NULL::int, NULL::text, NULL::jsonb;
            ELSE
                RETURN QUERY SELECT 'replayed'::text, NULL::int, NULL::text, found_reply;
            END IF;
            RETURN;
        END IF;
    END IF;

    FOR i IN 1 .. coalesce(array_length(p_read_streams, 1), 0) LOOP
        IF p_read_locks[i] = 1 THEN
            PERFORM pg_advisory_xact_lock_shared(hashtextextended(p_read_streams[i]::text, 7));
        ELSIF p_read_locks[i] = 2 THEN
            PERFORM pg_advisory_xact_lock(hashtextextended(p_read_streams[i]::text, 7));
        END IF;
        SELECT coalesce(max(e.version), 0) INTO current
        FROM event_store.events e WHERE e.stream_id = p_read_streams[i];
        IF current <> p_read_versions[i] THEN
            RETURN QUERY SELECT 'stale'::text, current, p_read_streams[i]::text, NULL::jsonb;
            RETURN;
        END IF;
    END LOOP;

    -- The target, exclusively (a no-op when it was read so): no other
    -- transaction appends to it from here until this one ends. A batch
    -- (append_batch) relies on it for the relay's per-stream order.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_stream_id::text, 7));
    -- After the streams' locks, as in a batch.
    PERFORM event_store.lock_claims(ARRAY[p_claims]);

    -- Checked under the actor's lock (the caller reads the actor's stream
    -- shared): ending a session takes it exclusively.
    IF p_session_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM auth.sessions s
        WHERE s.id = p_session_id AND s.user_id = p_actor_id AND s.revoked_at IS NULL
    ) THEN
        RETURN QUERY SELECT 'session_ended'::text, NULL::int, NULL::text, NULL::jsonb;
        RETURN;
    END IF;

    SELECT coalesce(max(e.version), 0) INTO current
    FROM event_store.events e WHERE e.stream_id = p_stream_id;
    IF current <> p_base_version THEN
        RETURN QUERY SELECT 'stale'::text, current, p_stream_id::text, NULL::jsonb;
        RETURN;
    END IF;

    -- Whether each claim has a free candidate, before anything is written
    -- (one lookup by key per candidate).
    FOR claim IN SELECT * FROM jsonb_array_elements(coalesce(p_claims, '[]'::jsonb)) LOOP
        chosen := NULL;
        FOREACH candidate IN ARRAY ARRAY(SELECT jsonb_array_elements_text(claim->'candidates')) LOOP
            PERFORM 1 FROM event_store.unique_claims u
            WHERE u.kind = claim->>'kind' AND u.value = candidate AND u.stream_id <> p_stream_id;
            IF NOT FOUND THEN
                chosen := candidate;
                EXIT;
            END IF;
        END LOOP;
        IF chosen IS NULL THEN
            taken := taken || (claim->>'kind');
        END IF;
    END LOOP;
    IF array_length(taken, 1) > 0 THEN
        RETURN QUERY SELECT 'taken'::text, NULL::int, array_to_string(taken, ','), NULL::jsonb;
        RETURN;
    END IF;

    -- Claim: the first candidate that is free when inserted (one taken by a
    -- transaction that committed since the look-up is passed over). If none
    -- is left, the statement fails as a whole and the command is decided again.
    FOR claim IN SELECT * FROM jsonb_array_elements(coalesce(p_claims, '[]'::jsonb)) LOOP
        chosen := NULL;
        n := 0;
        FOREACH candidate IN ARRAY ARRAY(SELECT jsonb_array_elements_text(claim->'candidates')) LOOP
            n := n + 1;
            INSERT INTO event_store.unique_claims (kind, value, stream_id)
            VALUES (claim->>'kind', candidate, p_stream_id)
            ON CONFLICT (kind, value) DO NOTHING;
            IF FOUND OR EXISTS (
                SELECT 1 FROM event_store.unique_claims u
                WHERE u.kind = claim->>'kind' AND u.value = candidate AND u.stream_id = p_stream_id
            ) THEN
                chosen := candidate;
                chosen_at := n;
                EXIT;
            END IF;
        END LOOP;
        IF chosen IS NULL THEN
            RAISE unique_violation USING
                MESSAGE = format('every %s candidate was claimed concurrently', claim->>'kind'),
                CONSTRAINT = 'unique_claims_pkey';
        END IF;
        IF claim->>'field' IS NOT NULL THEN
            -- The value as the event carries it: sealed for its author when
            -- the caller sealed each candidate (`values`), else as claimed.
            payloads[1] := jsonb_set(payloads[1], ARRAY[claim->>'field'],
                                     coalesce(claim->'values'->(chosen_at - 1), to_jsonb(chosen)));
        END IF;
    END LOOP;

    INSERT INTO event_store.events
        (event_id, stream_id, stream_type, version, event_type, schema_version, payload,
         command_id, correlation_id, causation_id, actor_id, metadata)
    SELECT new.event_id, p_stream_id, p_stream_type, p_base_version + new.ordinality::int,
           new.event_type, new.schema_version, new.payload,
           p_command_id, p_correlation_id, p_command_id, p_actor_id, p_metadata
    FROM unnest(p_event_ids, p_event_types, p_schema_versions, payloads)
         WITH ORDINALITY AS new(event_id, event_type, schema_version, payload, ordinality)
    ORDER BY new.ordinality;

    IF p_idempotency_key IS NOT NULL THEN
        INSERT INTO event_store.idempotency_keys (caller, key, request_hash, response, expires_at)
        VALUES (p_idempotency_caller, p_idempotency_key, p_fingerprint,
                jsonb_build_object('streamId', p_stream_id, 'streamType', p_stream_type,
                                   'version', p_base_version + events),
                now() + make_interval(secs => p_idempotency_ttl))
        ON CONFLICT (caller, key) DO UPDATE
          SET request_hash = EXCLUDED.request_hash, response = EXCLUDED.response,
              created_at = now(), expires_at = EXCLUDED.expires_at;
    END IF;

    RETURN QUERY SELECT 'appended'::text, p_base_version + events, NULL::text, NULL::jsonb;
END $$;
