-- Read models: denormalized so that every query is one indexed read.
-- Deliberately unqualified: the projector runs this with search_path set to the
-- schema it is building ("read" for the first build, "read_next" for a rebuild
-- beside the live one). Any change here is picked up by the projector at start
-- (the DDL hash differs) and rebuilt from the event store without downtime.

-- The last stream version applied to this generation of the read models. A
-- handler skips what it has applied; a consistency token waits on this table.
CREATE TABLE stream_versions (
    stream_id   UUID        PRIMARY KEY,
    version     INTEGER     NOT NULL,
    position    BIGINT      NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The highest applied position, for lag.
CREATE INDEX stream_versions_position_idx ON stream_versions (position);

CREATE TABLE users (
    id             UUID        PRIMARY KEY,
    handle         TEXT        NOT NULL UNIQUE,
    display_name   TEXT        NOT NULL,
    bio            TEXT,
    email          TEXT        NOT NULL,
    role           TEXT        NOT NULL,
    active         BOOLEAN     NOT NULL DEFAULT TRUE,
    post_count     INTEGER     NOT NULL DEFAULT 0,
    comment_count  INTEGER     NOT NULL DEFAULT 0,
    joined_at      TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    version        INTEGER     NOT NULL
);
CREATE INDEX users_joined_idx ON users (joined_at, id);

CREATE TABLE posts (
    id                   UUID        PRIMARY KEY,
    slug                 TEXT        NOT NULL UNIQUE,
    title                TEXT        NOT NULL,
    -- LZ4, not the default pglz: most bodies are stored compressed, and
    -- pglz was a third of Postgres's work in a rebuild's bulk load.
    body                 TEXT        COMPRESSION lz4 NOT NULL,
    excerpt              TEXT        NOT NULL,
    status               TEXT        NOT NULL,
    deleted              BOOLEAN     NOT NULL DEFAULT FALSE,
    -- A deactivated author's posts are hidden from everyone but moderators.
    author_active        BOOLEAN     NOT NULL DEFAULT TRUE,
    tags                 TEXT[]      NOT NULL DEFAULT '{}',
    author_id            UUID        NOT NULL,
    author_handle        TEXT        NOT NULL,
    author_display_name  TEXT        NOT NULL,
    comment_count        INTEGER     NOT NULL DEFAULT 0,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL,
    published_at         TIMESTAMPTZ,
    version              INTEGER     NOT NULL,
    -- Its images and their renditions (read_models::posts::PostImage), in
    -- upload order; an image URL is served when a post that may be seen has it.
    images               JSONB       NOT NULL DEFAULT '[]',
    -- Who may see it: everyone when public. The one SQL statement of the
    -- rule (PostRow::is_public states it in Rust); every list and count uses it.
    public               BOOLEAN     GENERATED ALWAYS AS
                           (status = 'PUBLISHED' AND NOT deleted AND author_active) STORED
);
CREATE INDEX posts_published_idx ON posts (published_at, id) WHERE public;
-- Public posts by last change. Public only: with drafts in it, the newest
-- changes (drafts being written) were walked past before any public post.
CREATE INDEX posts_updated_idx ON posts (updated_at, id) WHERE public;
CREATE INDEX posts_comment_count_idx ON posts (comment_count, id) WHERE public;
-- An author's posts, deleted ones too: their lists (which filter out the
-- deleted), and every recount and copy by author on the projector's live path,
-- which a partial index could not serve (each would scan the whole table).
CREATE INDEX posts_author_idx ON posts (author_id, published_at, id);
-- Drafts, newest change first (the moderators' queue): walking the updated
-- index instead reads past every newer published post.
CREATE INDEX posts_drafts_idx ON posts (updated_at, id) WHERE status = 'DRAFT' AND NOT deleted;
CREATE INDEX posts_tags_idx ON posts USING GIN (tags);
-- The posts an image (by content hash) appears in, for serving it.
CREATE INDEX posts_images_idx ON posts USING GIN (images jsonb_path_ops);

CREATE TABLE comments (
    id             UUID        PRIMARY KEY,
    post_id        UUID        NOT NULL,
    author_id      UUID        NOT NULL,
    parent_id      UUID,
    body           TEXT        NOT NULL,
    deleted        BOOLEAN     NOT NULL DEFAULT FALSE,
    reply_count    INTEGER     NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL,
    edited_at      TIMESTAMPTZ,
    version        INTEGER     NOT NULL
);
CREATE INDEX comments_thread_idx ON comments (post_id, created_at, id) WHERE parent_id IS NULL;
CREATE INDEX comments_replies_idx ON comments (parent_id, created_at, id) WHERE parent_id IS NOT NULL;
CREATE INDEX comments_author_idx ON comments (author_id);
-- A post's comment count, replies included (the thread index holds top-level ones only).
CREATE INDEX comments_post_idx ON comments (post_id);

CREATE TABLE tags (
    name        TEXT    PRIMARY KEY,
    post_count  INTEGER NOT NULL
);
CREATE INDEX tags_popular_idx ON tags (post_count DESC, name);
