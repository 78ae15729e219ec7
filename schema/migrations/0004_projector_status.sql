-- How each projection is doing, written by the projector every second and
-- read by query-service for `projectionStatus`.
CREATE TABLE projector.status (
    projection        TEXT             PRIMARY KEY,
    state             TEXT             NOT NULL,
    lag_events        BIGINT           NOT NULL,
    lag_seconds       DOUBLE PRECISION NOT NULL,
    applied_position  BIGINT           NOT NULL,
    detail            TEXT,
    updated_at        TIMESTAMPTZ      NOT NULL DEFAULT now()
);
