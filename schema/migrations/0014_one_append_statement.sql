-- One append statement. A single command's append is now a batch of one
-- (`append_batch`): every append takes its locks in the one global order
-- (appenders, idempotency keys, streams with the target among them, then
-- unique claims) and is checked by `append_locked` (0012; what it checks and
-- answers is described above 0008's `append`). `append` spelled that lock
-- sequence out a second time, and locked its target after the streams it
-- read rather than in stream order.
--
-- It stays, as a batch of one, for instances of the previous release during
-- a rolling deploy (they call it for every append made alone); nothing in
-- this release calls it, and a later release drops it.
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
    p_session_id       uuid,
    p_read_streams     uuid[],
    p_read_versions    int[],
    p_read_locks       int[],
    p_claims           jsonb,
    p_idempotency_caller text,
    p_idempotency_key    text,
    p_fingerprint        text,
    p_idempotency_ttl    float8
) RETURNS TABLE (outcome text, version int, detail text, stored jsonb)
LANGUAGE sql AS $$
    SELECT b.outcome, b.version, b.detail, b.stored
    FROM event_store.append_batch(
        ARRAY[p_stream_id], ARRAY[p_stream_type], ARRAY[p_base_version], ARRAY[p_command_id],
        ARRAY[p_correlation_id], ARRAY[p_actor_id], ARRAY[p_metadata], ARRAY[p_session_id],
        ARRAY[p_claims], ARRAY[p_idempotency_caller], ARRAY[p_idempotency_key],
        ARRAY[p_fingerprint], ARRAY[p_idempotency_ttl],
        array_fill(1, ARRAY[coalesce(array_length(p_event_ids, 1), 0)]),
        p_event_ids, p_event_types, p_schema_versions, p_payloads,
        array_fill(1, ARRAY[coalesce(array_length(p_read_streams, 1), 0)]),
        p_read_streams, p_read_versions, p_read_locks) AS b
$$;
