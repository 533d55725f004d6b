-- The registry's schema as commit 0f84f06 created it (before versioned migrations): the
-- version-0 database the migration tests upgrade.
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    name TEXT NOT NULL,
    profile TEXT NOT NULL,
    radio TEXT NOT NULL,
    w_energy DOUBLE PRECISION NOT NULL,
    w_privacy DOUBLE PRECISION NOT NULL,
    min_split INTEGER NOT NULL,
    model_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    split_device INTEGER NOT NULL,
    split_edge INTEGER NOT NULL,
    encoding TEXT NOT NULL,
    edge_id TEXT NOT NULL,
    reputation DOUBLE PRECISION NOT NULL DEFAULT 2.0361,
    registered_unix DOUBLE PRECISION NOT NULL,
    lat DOUBLE PRECISION,
    lon DOUBLE PRECISION,
    last_seen_unix DOUBLE PRECISION NOT NULL DEFAULT 0,
    sensors TEXT NOT NULL DEFAULT '{}',
    revoked_unix DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS edges (
    edge_id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    capacity DOUBLE PRECISION NOT NULL,
    load DOUBLE PRECISION NOT NULL DEFAULT 0,
    queue_depth INTEGER NOT NULL DEFAULT 0,
    last_seen_unix DOUBLE PRECISION NOT NULL,
    lat DOUBLE PRECISION,
    lon DOUBLE PRECISION,
    activation_cost DOUBLE PRECISION NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS edges_endpoint ON edges (endpoint);
CREATE TABLE IF NOT EXISTS heads (
    model_id TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    added_unix DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (model_id, name)
);
CREATE TABLE IF NOT EXISTS locations (
    device_id TEXT NOT NULL,
    unix_ms BIGINT NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    lon DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS locations_device ON locations (device_id, unix_ms);
CREATE TABLE IF NOT EXISTS campaigns (
    campaign_id TEXT PRIMARY KEY,
    report TEXT NOT NULL,
    created_unix DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    campaign_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    cell INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    answered INTEGER NOT NULL DEFAULT 0,
    reading DOUBLE PRECISION,
    label TEXT,
    PRIMARY KEY (campaign_id, task_id)
);
CREATE INDEX IF NOT EXISTS tasks_device ON tasks (device_id, answered);
CREATE TABLE IF NOT EXISTS placements (
    version INTEGER PRIMARY KEY,
    report TEXT NOT NULL,
    computed_unix DOUBLE PRECISION NOT NULL
);
