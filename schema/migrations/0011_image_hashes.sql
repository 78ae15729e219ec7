-- The posts an image's bytes (content hash) were uploaded to: erasing a
-- person deletes a blob only when no post of anyone else's has it. Partial:
-- only uploads are indexed.
CREATE INDEX events_image_hash_idx ON event_store.events ((payload->>'hash'))
    WHERE event_type = 'PostImageAdded';
