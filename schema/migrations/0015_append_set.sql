-- Group commit, set-based. `append_batch` (0012) checks and writes each
-- command in turn through `append_locked`: per command a PL/pgSQL call (its
-- arguments, the payload array, `RETURN QUERY`; ~0.4 ms), an events INSERT
-- and its statement trigger, a claims INSERT and an idempotency INSERT
-- (`pg_stat_statements` under the append bench: 1.0–1.25 ms of statement
-- time per command in a batch). Most batches are commands that cannot see
-- each other's writes: each appends to its own stream, reads no stream
-- another appends to, claims no value another claims, and uses no
-- idempotency key another uses. Run in any order they decide the same, so
-- `append_set` checks them all against the state before the batch and
-- writes them with one INSERT per table. A batch where one command's
-- outcome may depend on another's goes to `append_batch`, in turn as before.

-- The batch's locks, in the one global order: appenders (shared),
-- idempotency keys, streams (targets exclusive), claims. The same statements
-- as `append_batch`'s (0012), which stays as it is for the previous
-- release's instances during a rolling deploy.
CREATE FUNCTION event_store.lock_batch(
    c_stream uuid[], c_claims jsonb[], c_caller text[], c_key text[],
    r_stream uuid[], r_lock int[]
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(event_store.appenders_key());
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
END $$;

-- Whether some command of the batch may see another's writes: two append
-- to one stream, one reads a stream another appends to, two use one
-- idempotency key, or one unique value is a candidate twice.
CREATE FUNCTION event_store.batch_is_entangled(
    c_stream uuid[], c_claims jsonb[], c_caller text[], c_key text[],
    r_command int[], r_stream uuid[]
) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM unnest(c_stream) AS t(stream)
                   GROUP BY t.stream HAVING count(*) > 1)
        OR EXISTS (SELECT 1
                   FROM unnest(r_command, r_stream) AS r(command, stream)
                   JOIN unnest(c_stream) WITH ORDINALITY AS t(stream, command)
                     ON t.stream = r.stream AND t.command <> r.command)
        OR EXISTS (SELECT 1 FROM unnest(c_caller, c_key) AS i(caller, key)
                   WHERE i.key IS NOT NULL
                   GROUP BY i.caller, i.key HAVING count(*) > 1)
        OR EXISTS (SELECT 1
                   FROM unnest(c_claims) AS list(claims),
                        jsonb_array_elements(coalesce(list.claims, '[]'::jsonb)) AS c,
                        jsonb_array_elements_text(c->'candidates') AS v
                   GROUP BY c->>'kind', v HAVING count(*) > 1)
$$;

-- Group commit: `append_batch`'s arguments and answers (one row per
-- command), with what is checked for each command and in which order as in
-- `append_locked`.
CREATE FUNCTION event_store.append_set(
    c_stream uuid[], c_type text[], c_base int[], c_command uuid[], c_correlation uuid[],
    c_actor uuid[], c_metadata jsonb[], c_session uuid[], c_claims jsonb[],
    c_caller text[], c_key text[], c_fingerprint text[], c_ttl float8[],
    e_command int[], e_id uuid[], e_type text[], e_schema int2[], e_payload jsonb[],
    r_command int[], r_stream uuid[], r_version int[], r_lock int[]
) RETURNS TABLE (command int, outcome text, version int, detail text, stored jsonb)
LANGUAGE plpgsql
-- The planner's guesses for the JSON arrays' lengths (100 rows each) put the
-- statement's cost far above `jit_above_cost`: compiling it took seconds,
-- for a statement that runs in about a millisecond.
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    -- As `append_batch` checks it: an event or read given for no command
    -- would be dropped silently, and its command answered as appended.
    IF EXISTS (SELECT 1 FROM unnest(e_command) AS e(command)
               WHERE e.command IS NULL OR e.command NOT BETWEEN 1 AND cardinality(c_stream))
       OR EXISTS (SELECT 1 FROM unnest(r_command) AS r(command)
                  WHERE r.command IS NULL OR r.command NOT BETWEEN 1 AND cardinality(c_stream)) THEN
        RAISE EXCEPTION 'append_set: an event or read names no command of the batch';
    END IF;
    PERFORM event_store.lock_batch(c_stream, c_claims, c_caller, c_key, r_stream, r_lock);
    IF event_store.batch_is_entangled(c_stream, c_claims, c_caller, c_key, r_command, r_stream) THEN
        -- Takes the same locks again: held already, each is a counter bump.
        RETURN QUERY SELECT * FROM event_store.append_batch(
            c_stream, c_type, c_base, c_command, c_correlation, c_actor, c_metadata, c_session,
            c_claims, c_caller, c_key, c_fingerprint, c_ttl,
            e_command, e_id, e_type, e_schema, e_payload,
            r_command, r_stream, r_version, r_lock);
        RETURN;
    END IF;

    RETURN QUERY
    WITH ev AS (
        SELECT e.command, e.id, e.type, e.schema, e.payload,
               row_number() OVER (PARTITION BY e.command ORDER BY e.ord)::int AS pos
        FROM unnest(e_command, e_id, e_type, e_schema, e_payload)
             WITH ORDINALITY AS e(command, id, type, schema, payload, ord)
    ),
    cmd AS (
        SELECT c.*, coalesce(counts.events, 0)::int AS events
        FROM unnest(c_stream, c_type, c_base, c_command, c_correlation, c_actor, c_metadata,
                    c_session, c_claims, c_caller, c_key, c_fingerprint, c_ttl)
             WITH ORDINALITY AS c(stream, type, base, command_id, correlation, actor, metadata,
                                  session, claims, caller, key, fingerprint, ttl, n)
        LEFT JOIN (SELECT ev.command, max(ev.pos) AS events FROM ev GROUP BY ev.command) counts
          ON counts.command = c.n
    ),
    -- Each claim, and its first candidate no other stream holds (`owned`:
    -- this stream holds it already). Every look-up here is a scalar subquery
    -- or a LATERAL with LIMIT: one index probe per row, never a hash of a
    -- whole table (what the planner picks for EXISTS over tens of rows).
    claim AS (
        SELECT c.n, item.ord, item.claim->>'kind' AS kind, item.claim->>'field' AS field,
               item.claim->'values' AS sealed, free.value, free.at, free.holder IS NOT NULL AS owned
        FROM cmd c
        CROSS JOIN LATERAL jsonb_array_elements(coalesce(c.claims, '[]'::jsonb))
             WITH ORDINALITY AS item(claim, ord)
        LEFT JOIN LATERAL (
            SELECT candidate.value, candidate.at, held.holder
            FROM jsonb_array_elements_text(item.claim->'candidates')
                 WITH ORDINALITY AS candidate(value, at)
            LEFT JOIN LATERAL (SELECT u.stream_id AS holder FROM event_store.unique_claims u
                               WHERE u.kind = item.claim->>'kind' AND u.value = candidate.value
                               LIMIT 1) held ON true
            WHERE held.holder IS NULL OR held.holder = c.stream
            ORDER BY candidate.at
            LIMIT 1) free ON true
    ),
    read_state AS (
        SELECT r.command, r.ord, r.stream, r.version AS read, cur.version AS current
        FROM unnest(r_command, r_stream, r_version) WITH ORDINALITY AS r(command, stream, version, ord)
        CROSS JOIN LATERAL (SELECT coalesce(max(e.version), 0) AS version
                            FROM event_store.events e WHERE e.stream_id = r.stream) cur
    ),
    -- Materialized: `result` reads `taken` and `session_ended` more than
    -- once, and inlined, each read would run its subquery again.
    decided AS MATERIALIZED (
        SELECT c.*, k.request_hash, k.response, stale.stream AS stale_stream,
               stale.current AS stale_version, target.current AS target_version,
               (SELECT string_agg(cl.kind, ',' ORDER BY cl.ord) FROM claim cl
                WHERE cl.n = c.n AND cl.value IS NULL) AS taken,
               (c.session IS NOT NULL AND (
                    SELECT s.id FROM auth.sessions s
                    WHERE s.id = c.session AND s.user_id = c.actor AND s.revoked_at IS NULL) IS NULL)
                   AS session_ended
        FROM cmd c
        LEFT JOIN LATERAL (SELECT k.request_hash, k.response FROM event_store.idempotency_keys k
                           WHERE c.key IS NOT NULL AND k.caller = c.caller AND k.key = c.key
                             AND k.expires_at > now()
                           LIMIT 1) k ON true
        LEFT JOIN LATERAL (SELECT rs.stream, rs.current FROM read_state rs
                           WHERE rs.command = c.n AND rs.current <> rs.read
                           ORDER BY rs.ord LIMIT 1) stale ON true
        CROSS JOIN LATERAL (SELECT coalesce(max(e.version), 0) AS current
                            FROM event_store.events e WHERE e.stream_id = c.stream) target
    ),
    result AS (
        SELECT d.*, CASE
                   WHEN d.request_hash IS NOT NULL AND d.request_hash <> d.fingerprint THEN 'key_reused'
                   WHEN d.request_hash IS NOT NULL THEN 'replayed'
                   WHEN d.stale_stream IS NOT NULL THEN 'stale_read'
                   WHEN d.session_ended THEN 'session_ended'
                   WHEN d.target_version <> d.base THEN 'stale'
                   WHEN d.taken IS NOT NULL THEN 'taken'
                   ELSE 'appended' END AS decision
        FROM decided d
    ),
    -- No ON CONFLICT: every candidate's lock is held and it was free, so a
    -- conflict means a writer that took no lock; the unique violation rolls
    -- the batch back and each command is appended alone.
    claimed AS (
        INSERT INTO event_store.unique_claims (kind, value, stream_id)
        SELECT cl.kind, cl.value, r.stream
        FROM claim cl JOIN result r ON r.n = cl.n
        WHERE r.decision = 'appended' AND NOT cl.owned
    ),
    -- The claimed values the first event carries: sealed for its author when
    -- the caller sealed each candidate (`sealed`), else as claimed.
    fields AS (
        SELECT cl.n, jsonb_object_agg(cl.field, coalesce(cl.sealed->(cl.at::int - 1), to_jsonb(cl.value))
                                      ORDER BY cl.ord) AS chosen
        FROM claim cl WHERE cl.field IS NOT NULL
        GROUP BY cl.n
    ),
    appended AS (
        INSERT INTO event_store.events
            (event_id, stream_id, stream_type, version, event_type, schema_version, payload,
             command_id, correlation_id, causation_id, actor_id, metadata)
        SELECT ev.id, r.stream, r.type, r.base + ev.pos, ev.type, ev.schema,
               CASE WHEN ev.pos = 1 AND f.chosen IS NOT NULL THEN ev.payload || f.chosen
                    ELSE ev.payload END,
               r.command_id, r.correlation, r.command_id, r.actor, r.metadata
        FROM ev
        JOIN result r ON r.n = ev.command AND r.decision = 'appended'
        LEFT JOIN fields f ON f.n = ev.command
        ORDER BY ev.command, ev.pos
    ),
    remembered AS (
        INSERT INTO event_store.idempotency_keys (caller, key, request_hash, response, expires_at)
        SELECT r.caller, r.key, r.fingerprint,
               jsonb_build_object('streamId', r.stream, 'streamType', r.type,
                                  'version', r.base + r.events),
               now() + make_interval(secs => r.ttl)
        FROM result r WHERE r.decision = 'appended' AND r.key IS NOT NULL
        ON CONFLICT (caller, key) DO UPDATE
          SET request_hash = EXCLUDED.request_hash, response = EXCLUDED.response,
              created_at = now(), expires_at = EXCLUDED.expires_at
    )
    SELECT r.n::int,
           CASE r.decision WHEN 'stale_read' THEN 'stale' ELSE r.decision END,
           CASE r.decision WHEN 'appended' THEN r.base + r.events
                           WHEN 'stale_read' THEN r.stale_version
                           WHEN 'stale' THEN r.target_version END,
           CASE r.decision WHEN 'stale_read' THEN r.stale_stream::text
                           WHEN 'stale' THEN r.stream::text
                           WHEN 'taken' THEN r.taken END,
           CASE r.decision WHEN 'replayed' THEN r.response END
    FROM result r
    ORDER BY r.n;
END $$;
