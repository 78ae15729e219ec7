-- An unreadable message redelivered (a crash before its offset was committed)
-- is the same dead letter, not a second one.
DELETE FROM projector.dead_letters d
USING projector.dead_letters e
WHERE d.event_id IS NULL AND e.event_id IS NULL AND d.projection = e.projection
  AND d.kafka_partition = e.kafka_partition AND d.kafka_offset = e.kafka_offset AND d.id > e.id;
CREATE UNIQUE INDEX dead_letters_message_key
    ON projector.dead_letters (projection, kafka_partition, kafka_offset) WHERE event_id IS NULL;

-- A consistency token on a dead-lettered version is answered so, not waited out.
CREATE INDEX dead_letters_open_stream_idx
    ON projector.dead_letters (stream_id, version) WHERE redriven_at IS NULL;

-- The rebuild reads user streams first, without scanning the store (user
-- events are few: this index costs the append path nearly nothing).
CREATE INDEX events_user_streams_idx
    ON event_store.events (stream_id, version) WHERE stream_type = 'user';
