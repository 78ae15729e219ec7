-- One append statement. A single command's append is now a batch of one
-- (`append_batch`): every append takes its locks in the one global order
-- (appenders, idempotency keys, streams with the target among them, then
-- unique claims) and is checked by `append_locked` (0012). `append` spelled
-- that lock sequence out a second time, and locked its target after the
-- streams it read rather than in stream order.
DROP FUNCTION event_store.append(
    uuid, text, int, uuid[], text[], int2[], jsonb[], uuid, uuid, uuid, jsonb, uuid,
    uuid[], int[], int[], jsonb, text, text, text, float8);
