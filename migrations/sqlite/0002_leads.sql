-- Lead state, one row per normalised email. `state` is the qualification engine's JSON; the
-- other columns are copies kept for queries (admin API, funnel report).
CREATE TABLE leads (
    email       TEXT    PRIMARY KEY,
    state       TEXT    NOT NULL,
    version     INTEGER NOT NULL,              -- +1 on every change; orders CRM snapshots
    stage       TEXT    NOT NULL,
    stage_rank  INTEGER NOT NULL,
    max_rank    INTEGER NOT NULL,              -- furthest stage ever reached (conversion rates)
    score       INTEGER NOT NULL,
    source      TEXT,                          -- first-touch source
    campaign    TEXT,                          -- first-touch campaign
    created_at  INTEGER NOT NULL,              -- Unix ms
    updated_at  INTEGER NOT NULL
);
CREATE INDEX leads_by_stage ON leads (stage);

-- Which stored events touched which lead (admin: a lead's history; replay).
CREATE TABLE lead_events (
    email    TEXT    NOT NULL,
    event_id INTEGER NOT NULL REFERENCES events (id),
    PRIMARY KEY (email, event_id)
);
CREATE INDEX lead_events_by_event ON lead_events (event_id);
