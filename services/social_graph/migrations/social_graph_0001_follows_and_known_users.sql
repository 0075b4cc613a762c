-- depends: kit_0001_outbox_and_processed_events
-- Usernames follow the GitHub login rule: 1-39 of a-z, 0-9 and single inner dashes.
CREATE TABLE follows (
    id          BIGSERIAL PRIMARY KEY,
    follower    TEXT NOT NULL CHECK (follower ~ '^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){0,38}$'),
    followed    TEXT NOT NULL CHECK (followed ~ '^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){0,38}$'),
    created_at  TIMESTAMPTZ NOT NULL,
    -- One edge per pair: concurrent follows of the same pair insert one row (ON CONFLICT DO NOTHING).
    CONSTRAINT follows_one_per_pair UNIQUE (follower, followed),
    CONSTRAINT follows_not_self CHECK (follower <> followed)
);

-- Both directions' pages, newest first (keyset pagination on id).
CREATE INDEX follows_following_page_idx ON follows (follower, id DESC);
CREATE INDEX follows_followers_page_idx ON follows (followed, id DESC);

-- Projection of the users that exist, fed by delinkcious.users.v1.created events and by lookups in
-- the user service for users the events have not brought yet.
CREATE TABLE known_users (
    username     TEXT PRIMARY KEY CHECK (username ~ '^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){0,38}$'),
    known_since  TIMESTAMPTZ NOT NULL
);
