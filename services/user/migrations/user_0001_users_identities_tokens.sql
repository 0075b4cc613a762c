-- depends: kit_0001_outbox_and_processed_events
CREATE TABLE users (
    id          BIGSERIAL PRIMARY KEY,
    username    TEXT NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9](-?[a-z0-9])*$' AND char_length(username) <= 39),
    email       TEXT CHECK (char_length(email) <= 320),
    name        TEXT CHECK (char_length(name) <= 200),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- A login with GitHub and one with an OIDC provider are distinct identities.
CREATE TABLE identities (
    provider    TEXT NOT NULL,
    subject     TEXT NOT NULL,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, subject)
);
CREATE INDEX identities_user_idx ON identities (user_id);

-- Only the SHA-256 of a token is stored; verification is one lookup on the unique index.
CREATE TABLE access_tokens (
    token_id    UUID PRIMARY KEY,
    token_hash  BYTEA NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX access_tokens_user_idx ON access_tokens (user_id, created_at DESC);
