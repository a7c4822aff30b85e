-- The raw inbox: every accepted delivery, exactly as it arrived, deduplicated per source.
CREATE TABLE events (
    id            INTEGER PRIMARY KEY,
    source        TEXT    NOT NULL,
    dedupe_key    TEXT    NOT NULL,
    received_at   INTEGER NOT NULL,             -- Unix ms
    content_type  TEXT    NOT NULL,
    body          BLOB    NOT NULL,             -- the exact bytes that were verified
    payload       TEXT,                         -- decoded JSON when the body is not JSON already
    status        TEXT    NOT NULL DEFAULT 'received',
    status_reason TEXT,
    processed_at  INTEGER,
    UNIQUE (source, dedupe_key)
);
CREATE INDEX events_by_status ON events (status, id);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
