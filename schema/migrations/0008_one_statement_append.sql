-- The write path in one statement, and the relay's fence and lease.

-- Every transaction that appends events holds this key (shared) from before
-- its first write until it ends. The outbox relay waits only for those
-- (see command-service/src/outbox/fence.rs), not for every transaction on the
-- server: a long transaction in another database, or a rebuild's, no longer
-- holds publishing back.
CREATE FUNCTION event_store.appenders_key() RETURNS bigint
    LANGUAGE sql IMMUTABLE AS $$ SELECT 4706349869198230866::bigint $$;  -- "APPENDER"

-- Idempotency keys' advisory locks: the two-key form, class "IDEM".
CREATE FUNCTION event_store.idempotency_lock_class() RETURNS int
    LANGUAGE sql IMMUTABLE AS $$ SELECT 1229210957 $$;

-- Unique claims' advisory locks, per (kind, candidate): class "CLAM". Taken
-- in one order by every appender before it inserts a claim, so two
-- transactions claiming the same values (a batch in any order) never wait on
-- each other's uncommitted inserts in a cycle.
CREATE FUNCTION event_store.claim_lock_class() RETURNS int
    LANGUAGE sql IMMUTABLE AS $$ SELECT 1129070925 $$;

-- The claim locks of these claims ([{"kind", "candidates"}, ...]), in order.
CREATE FUNCTION event_store.lock_claims(p_claims jsonb[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    hash int;
BEGIN
    FOR hash IN
        SELECT DISTINCT hashtext((c->>'kind') || ':' || v)
        FROM unnest(p_claims) AS list(claims),
             jsonb_array_elements(coalesce(list.claims, '[]'::jsonb)) AS c,
             jsonb_array_elements_text(c->'candidates') AS v
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(event_store.claim_lock_class(), hash);
    END LOOP;
END $$;

-- A safety net for writers that append without `event_store.append` (an
-- operator's INSERT): the lock is taken before the statement writes, so
-- before a transaction that writes nothing else gets its id.
CREATE FUNCTION event_store.announce_appender() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(event_store.appenders_key());
    RETURN NULL;
END $$;
CREATE TRIGGER events_appender BEFORE INSERT ON event_store.events
    FOR EACH STATEMENT EXECUTE FUNCTION event_store.announce_appender();

-- One relay is active: it holds a lease, renewed every few seconds. A leader
-- that goes silent (stopped, partitioned) loses it when it expires and a
-- standby takes over; its cursor writes are fenced by the lease.
CREATE TABLE event_store.relay_lease (
    relay       TEXT        PRIMARY KEY,
    holder      UUID        NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

-- A command's decision, checked and appended in one statement: the caller
-- decided on what it read (the streams and versions of `read_streams`, the
-- target stream at `base_version`, the actor's session); this checks that
-- all of it still holds, claims the unique values, appends the events and
-- records the idempotency key, or answers why not. Nothing is written
-- before every check has passed, so the claims and the append are the
-- transaction's first writes, after every read (the relay's per-stream order
-- depends on it). A lost race on the stream's version, or on a unique value,
-- is a constraint violation: the statement rolls back as a whole.
--
-- Outcomes: appended (version), replayed (the stored reply of an idempotency
-- key), key_reused (the key came with another request), session_ended,
-- stale (a read stream moved on: detail names it, version is its version
-- now), taken (detail: the claim kinds whose values are taken).
CREATE FUNCTION event_store.append(
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
        FOREACH candidate IN ARRAY ARRAY(SELECT jsonb_array_elements_text(claim->'candidates')) LOOP
            INSERT INTO event_store.unique_claims (kind, value, stream_id)
            VALUES (claim->>'kind', candidate, p_stream_id)
            ON CONFLICT (kind, value) DO NOTHING;
            IF FOUND OR EXISTS (
                SELECT 1 FROM event_store.unique_claims u
                WHERE u.kind = claim->>'kind' AND u.value = candidate AND u.stream_id = p_stream_id
            ) THEN
                chosen := candidate;
                EXIT;
            END IF;
        END LOOP;
        IF chosen IS NULL THEN
            RAISE unique_violation USING
                MESSAGE = format('every %s candidate was claimed concurrently', claim->>'kind'),
                CONSTRAINT = 'unique_claims_pkey';
        END IF;
        IF claim->>'field' IS NOT NULL THEN
            payloads[1] := jsonb_set(payloads[1], ARRAY[claim->>'field'], to_jsonb(chosen));
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


-- Group commit: the appends of many commands in one statement and one
-- transaction, each checked by `event_store.append` in turn (so the outcome
-- is that of running them one after another: an append to a stream an
-- earlier one in the batch moved is `stale`). Every lock the appends take is
-- taken first, in the one global order (idempotency keys, then streams by
-- id, then unique-claim candidates), before anything is written: no cycle with another transaction, and
-- no stream appended to here gains a version elsewhere once this
-- transaction has its id. Columns c_* are per append; e_* (events) and r_*
-- (streams read) name their append by its 1-based position.
CREATE FUNCTION event_store.append_batch(
    c_stream uuid[], c_type text[], c_base int[], c_command uuid[], c_correlation uuid[],
    c_actor uuid[], c_metadata jsonb[], c_session uuid[], c_claims jsonb[],
    c_caller text[], c_key text[], c_fingerprint text[], c_ttl float8[],
    e_command int[], e_id uuid[], e_type text[], e_schema int2[], e_payload jsonb[],
    r_command int[], r_stream uuid[], r_version int[], r_lock int[]
) RETURNS TABLE (command int, outcome text, version int, detail text, stored jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    hash      int;
    stream    uuid;
    exclusive boolean;
BEGIN
    -- One lock at a time, in order (a loop: a set-returning PERFORM could
    -- evaluate the calls in any order).
    FOR hash IN
        SELECT DISTINCT hashtext(i.caller || ':' || i.key)
        FROM unnest(c_caller, c_key) AS i(caller, key) WHERE i.key IS NOT NULL
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(event_store.idempotency_lock_class(), hash);
    END LOOP;
    FOR stream, exclusive IN
        SELECT l.stream, max(l.lock) = 2
        FROM (SELECT r.stream, r.lock FROM unnest(r_stream, r_lock) AS r(stream, lock) WHERE r.lock > 0
              UNION ALL
              SELECT t.stream, 2 FROM unnest(c_stream) AS t(stream)) l
        GROUP BY l.stream
        ORDER BY l.stream
    LOOP
        IF exclusive THEN
            PERFORM pg_advisory_xact_lock(hashtextextended(stream::text, 7));
        ELSE
            PERFORM pg_advisory_xact_lock_shared(hashtextextended(stream::text, 7));
        END IF;
    END LOOP;
    PERFORM event_store.lock_claims(c_claims);

    RETURN QUERY
    SELECT c.n::int, a.outcome, a.version, a.detail, a.stored
    FROM unnest(c_stream, c_type, c_base, c_command, c_correlation, c_actor, c_metadata,
                c_session, c_claims, c_caller, c_key, c_fingerprint, c_ttl)
         WITH ORDINALITY AS c(stream, stream_type, base, command_id, correlation_id, actor_id,
                              metadata, session_id, claims, caller, key, fingerprint, ttl, n)
    CROSS JOIN LATERAL event_store.append(
        c.stream, c.stream_type, c.base,
        ARRAY(SELECT e.id FROM unnest(e_command, e_id) WITH ORDINALITY AS e(command, id, i)
              WHERE e.command = c.n ORDER BY e.i),
        ARRAY(SELECT e.type FROM unnest(e_command, e_type) WITH ORDINALITY AS e(command, type, i)
              WHERE e.command = c.n ORDER BY e.i),
        ARRAY(SELECT e.schema FROM unnest(e_command, e_schema) WITH ORDINALITY AS e(command, schema, i)
              WHERE e.command = c.n ORDER BY e.i),
        ARRAY(SELECT e.payload FROM unnest(e_command, e_payload) WITH ORDINALITY AS e(command, payload, i)
              WHERE e.command = c.n ORDER BY e.i),
        c.command_id, c.correlation_id, c.actor_id, c.metadata, c.session_id,
        ARRAY(SELECT r.stream FROM unnest(r_command, r_stream) WITH ORDINALITY AS r(command, stream, i)
              WHERE r.command = c.n ORDER BY r.i),
        ARRAY(SELECT r.version FROM unnest(r_command, r_version) WITH ORDINALITY AS r(command, version, i)
              WHERE r.command = c.n ORDER BY r.i),
        ARRAY(SELECT r.lock FROM unnest(r_command, r_lock) WITH ORDINALITY AS r(command, lock, i)
              WHERE r.command = c.n ORDER BY r.i),
        c.claims, c.caller, c.key, c.fingerprint, c.ttl
    ) AS a
    ORDER BY c.n;
END $$;
