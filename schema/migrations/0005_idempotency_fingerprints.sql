-- Idempotency records were fingerprinted with an unsalted SHA-256 of the whole
-- command, passwords included: a guess could be tested against them at hash
-- speed. Fingerprints are now a keyed HMAC of the command without its secrets;
-- the old records go (they would not match the new fingerprints anyway, and
-- expire within a day).
DELETE FROM event_store.idempotency_keys;
