-- Group commit without doing its work twice. Measured with pg_stat_statements
-- under the append bench: `append_batch` took every lock of the batch, then
-- called `append` for each command, which took them all again (its unique
-- claims' locks alone were a fifth of the batch's time), and gathered each
-- command's events and reads by scanning the whole batch's arrays, once per
-- command and column (quadratic in the batch). Now the checks and writes
-- live in one place, `append_locked`, run under locks its caller holds:
-- `append` takes one command's locks and calls it; `append_batch` takes the
-- batch's locks once and calls it per command with that command's events.

-- A command's decision, checked and appended (see `append` for what is
-- checked and the outcomes), under locks the caller holds: the appenders'
-- key (shared), the idempotency key's, every stream read (as the decision
-- needs) and the target (exclusive), then the unique claims' candidates.
CREATE FUNCTION event_store.append_locked(
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
    -- Streams the decision read, at the versions it read them.
    p_read_streams     uuid[],
    p_read_versions    int[],
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
    -- Held already by every caller here (a no-op then); taken again so that
    -- even a direct call holds it before its first write (the unique claims
    -- come before the events and their trigger).
    PERFORM pg_advisory_xact_lock_shared(event_store.appenders_key());
    IF p_idempotency_key IS NOT NULL THEN
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
        SELECT coalesce(max(e.version), 0) INTO current
        FROM event_store.events e WHERE e.stream_id = p_read_streams[i];
        IF current <> p_read_versions[i] THEN
            RETURN QUERY SELECT 'stale'::text, current, p_read_streams[i]::text, NULL::jsonb;
            RETURN;
        END IF;
    END LOOP;

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

-- The claim locks of these claims ([{"kind", "candidates"}, ...]), in order,
-- in one statement: a post's eleven slug candidates took eleven statements
-- of the loop this replaces, each with its own executor start and end. The
-- outer query takes each lock as the sorted subquery hands it the next hash,
-- so in order (nothing above the subquery sorts or hashes its rows again).
CREATE OR REPLACE FUNCTION event_store.lock_claims(p_claims jsonb[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(event_store.claim_lock_class(), hashes.hash)
    FROM (SELECT DISTINCT hashtext((c->>'kind') || ':' || v) AS hash
          FROM unnest(p_claims) AS list(claims),
               jsonb_array_elements(coalesce(list.claims, '[]'::jsonb)) AS c,
               jsonb_array_elements_text(c->'candidates') AS v
          ORDER BY 1) hashes;
END $$;

-- One command's append: its locks, in the one global order, then the checks
-- and writes. What is checked, and the outcomes, as in 0008 and 0010.
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
BEGIN
    PERFORM pg_advisory_xact_lock_shared(event_store.appenders_key());
    IF p_idempotency_key IS NOT NULL THEN
        -- The two-key form: a space of its own, apart from the streams' locks.
        PERFORM pg_advisory_xact_lock(event_store.idempotency_lock_class(),
                                      hashtext(p_idempotency_caller || ':' || p_idempotency_key));
    END IF;
    FOR i IN 1 .. coalesce(array_length(p_read_streams, 1), 0) LOOP
        IF p_read_locks[i] = 1 THEN
            PERFORM pg_advisory_xact_lock_shared(hashtextextended(p_read_streams[i]::text, 7));
        ELSIF p_read_locks[i] = 2 THEN
            PERFORM pg_advisory_xact_lock(hashtextextended(p_read_streams[i]::text, 7));
        END IF;
    END LOOP;
    -- The target, exclusively (a no-op when it was read so): no other
    -- transaction appends to it from here until this one ends. A batch
    -- relies on it for the relay's per-stream order.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_stream_id::text, 7));
    -- After the streams' locks, as in a batch.
    PERFORM event_store.lock_claims(ARRAY[p_claims]);

    RETURN QUERY SELECT * FROM event_store.append_locked(
        p_stream_id, p_stream_type, p_base_version, p_event_ids, p_event_types,
        p_schema_versions, p_payloads, p_command_id, p_correlation_id, p_actor_id,
        p_metadata, p_session_id, p_read_streams, p_read_versions, p_claims,
        p_idempotency_caller, p_idempotency_key, p_fingerprint, p_idempotency_ttl);
END $$;

-- Group commit (as in 0008: the appends of many commands in one statement,
-- each checked in turn, every lock taken first in the one global order).
-- Events (e_*) and reads (r_*) come grouped by their command, in order
-- (e_command and r_command ascending): each command is given its own.
CREATE OR REPLACE FUNCTION event_store.append_batch(
    c_stream uuid[], c_type text[], c_base int[], c_command uuid[], c_correlation uuid[],
    c_actor uuid[], c_metadata jsonb[], c_session uuid[], c_claims jsonb[],
    c_caller text[], c_key text[], c_fingerprint text[], c_ttl float8[],
    e_command int[], e_id uuid[], e_type text[], e_schema int2[], e_payload jsonb[],
    r_command int[], r_stream uuid[], r_version int[], r_lock int[]
) RETURNS TABLE (command int, outcome text, version int, detail text, stored jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    e_total   int := coalesce(array_length(e_command, 1), 0);
    r_total   int := coalesce(array_length(r_command, 1), 0);
    e_next    int := 1;
    r_next    int := 1;
    -- One command's events and reads. Gathered element by element: PL/pgSQL
    -- holds array arguments expanded, and a slice of one is a copy of the
    -- whole array (every payload of the batch, once per command).
    ids       uuid[];
    types     text[];
    schemas   int2[];
    payloads  jsonb[];
    streams   uuid[];
    versions  int[];
BEGIN
    PERFORM pg_advisory_xact_lock_shared(event_store.appenders_key());
    -- Each in one statement, in order (see lock_claims): idempotency keys,
    -- then streams.
    PERFORM pg_advisory_xact_lock(event_store.idempotency_lock_class(), keys.hash)
    FROM (SELECT DISTINCT hashtext(i.caller || ':' || i.key) AS hash
          FROM unnest(c_caller, c_key) AS i(caller, key) WHERE i.key IS NOT NULL
          ORDER BY 1) keys;
    PERFORM CASE WHEN s.exclusive
                 THEN pg_advisory_xact_lock(hashtextextended(s.stream::text, 7))
                 ELSE pg_advisory_xact_lock_shared(hashtextextended(s.stream::text, 7)) END
    FROM (SELECT l.stream, max(l.lock) = 2 AS exclusive
          FROM (SELECT r.stream, r.lock FROM unnest(r_stream, r_lock) AS r(stream, lock) WHERE r.lock > 0
                UNION ALL
                SELECT t.stream, 2 FROM unnest(c_stream) AS t(stream)) l
          GROUP BY l.stream
          ORDER BY l.stream) s;
    PERFORM event_store.lock_claims(c_claims);

    FOR n IN 1 .. coalesce(array_length(c_stream, 1), 0) LOOP
        ids := '{}'; types := '{}'; schemas := '{}'; payloads := '{}';
        WHILE e_next <= e_total AND e_command[e_next] = n LOOP
            ids := ids || e_id[e_next];
            types := types || e_type[e_next];
            schemas := schemas || e_schema[e_next];
            payloads := payloads || e_payload[e_next];
            e_next := e_next + 1;
        END LOOP;
        streams := '{}'; versions := '{}';
        WHILE r_next <= r_total AND r_command[r_next] = n LOOP
            streams := streams || r_stream[r_next];
            versions := versions || r_version[r_next];
            r_next := r_next + 1;
        END LOOP;
        RETURN QUERY
        SELECT n, a.outcome, a.version, a.detail, a.stored
        FROM event_store.append_locked(
            c_stream[n], c_type[n], c_base[n],
            ids, types, schemas, payloads,
            c_command[n], c_correlation[n], c_actor[n], c_metadata[n], c_session[n],
            streams, versions,
            c_claims[n], c_caller[n], c_key[n], c_fingerprint[n], c_ttl[n]) AS a;
    END LOOP;
    -- Rolls the whole statement back: no event is appended to a command it
    -- was not given with.
    IF e_next <= e_total OR r_next <= r_total THEN
        RAISE EXCEPTION 'append_batch: events and reads must come grouped by their command, in order';
    END IF;
END $$;
