-- depends: link_0002_username_statistics
-- The link checker's latest attempt at a link that reached no verdict (a timeout, 429, 5xx ...), made after the
-- link's last conclusive check: when, why, and when it is tried next (or that it was given up). The status and
-- its columns (status, http_status, status_reason, checked_at) stay those of the last conclusive check. All NULL
-- when there is no such attempt: a conclusive check after it clears them.
--
-- Nullable columns without defaults, and constraints NOT VALID: adding them neither rewrites nor scans the table
-- (every existing row has NULL in the new columns, which the constraints accept); new writes are checked.
ALTER TABLE links
    ADD COLUMN last_attempt_at          TIMESTAMPTZ,
    ADD COLUMN last_attempt_reason      TEXT,
    ADD COLUMN last_attempt_failure     TEXT,
    ADD COLUMN last_attempt_http_status INTEGER,
    ADD COLUMN last_attempt_count       INTEGER,
    ADD COLUMN next_attempt_at          TIMESTAMPTZ,
    ADD COLUMN last_attempt_given_up    BOOLEAN,
    ADD CONSTRAINT links_last_attempt_values CHECK (
        char_length(last_attempt_reason) BETWEEN 1 AND 500
        AND char_length(last_attempt_failure) BETWEEN 1 AND 64
        AND last_attempt_count >= 1
    ) NOT VALID,
    -- An attempt is recorded whole, or not at all.
    ADD CONSTRAINT links_last_attempt_whole CHECK (
        (last_attempt_at IS NULL) = (last_attempt_reason IS NULL)
        AND (last_attempt_at IS NULL) = (last_attempt_failure IS NULL)
        AND (last_attempt_at IS NULL) = (last_attempt_count IS NULL)
        AND (last_attempt_at IS NULL) = (last_attempt_given_up IS NULL)
        AND (last_attempt_at IS NOT NULL OR (next_attempt_at IS NULL AND last_attempt_http_status IS NULL))
    ) NOT VALID;
