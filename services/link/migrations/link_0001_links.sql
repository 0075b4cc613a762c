-- depends: kit_0001_outbox_and_processed_events
CREATE TABLE links (
    id             BIGSERIAL PRIMARY KEY,
    username       TEXT NOT NULL CHECK (username ~ '^[a-z0-9-]{1,39}$'),
    url            TEXT NOT NULL CHECK (char_length(url) BETWEEN 1 AND 2048),
    -- scheme/host lower-cased, default port and trailing slash dropped: the duplicate key
    url_key        TEXT NOT NULL,
    title          TEXT NOT NULL CHECK (char_length(title) BETWEEN 1 AND 500),
    description    TEXT NOT NULL DEFAULT '' CHECK (char_length(description) <= 5000),
    tags           TEXT[] NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 50),
    status         TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'valid', 'invalid')),
    http_status    INTEGER,
    status_reason  TEXT,
    checked_at     TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    CONSTRAINT links_one_per_user_and_url UNIQUE (username, url_key)
);

-- A user's page, newest first (keyset pagination on id), and the quota count: index-only.
CREATE INDEX links_user_page_idx ON links (username, id DESC);
-- Tag filter.
CREATE INDEX links_tags_idx ON links USING GIN (tags);
