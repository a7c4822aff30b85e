-- Each event's input to each lead (the mapped patches and engagements), its provider time, and
-- the clock it was qualified at: a late event rebuilds the lead from these in provider-time
-- order (src/pipeline/fold.rs). Rows from before this migration have no items.
ALTER TABLE lead_events ADD COLUMN occurred_at INTEGER;
ALTER TABLE lead_events ADD COLUMN folded_at INTEGER;
ALTER TABLE lead_events ADD COLUMN items TEXT;
CREATE INDEX lead_events_in_order ON lead_events (email, occurred_at, event_id);
