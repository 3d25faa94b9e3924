CREATE TABLE IF NOT EXISTS db_metadata (
    singleton BOOL PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version TEXT NOT NULL,
    time_modified TIMESTAMPTZ NOT NULL
);
