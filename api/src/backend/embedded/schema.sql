-- The embedded store: one team, its channels, memberships and posts, shaped like Mattermost's.
CREATE TABLE IF NOT EXISTS teams (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    create_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    seq           INTEGER PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,   -- argon2id, PHC string
    is_staff      INTEGER NOT NULL DEFAULT 0,
    create_at     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
    id           TEXT PRIMARY KEY,
    team_id      TEXT NOT NULL REFERENCES teams(id),
    name         TEXT NOT NULL,
    display_name TEXT NOT NULL,
    create_at    INTEGER NOT NULL,
    UNIQUE (team_id, name)
);
CREATE TABLE IF NOT EXISTS channel_members (
    channel_id TEXT NOT NULL REFERENCES channels(id),
    user_id    TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (channel_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS channel_members_by_user ON channel_members (user_id, channel_id);
-- seq is the commit order of the single writer: the order subscribers and history agree on.
CREATE TABLE IF NOT EXISTS posts (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    channel_id TEXT NOT NULL REFERENCES channels(id),
    user_id    TEXT NOT NULL REFERENCES users(id),
    message    TEXT NOT NULL,
    post_type  TEXT NOT NULL,
    create_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS posts_by_channel ON posts (channel_id, seq);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash TEXT PRIMARY KEY,  -- sha256 of the token; the token itself is never stored
    user_id    TEXT NOT NULL REFERENCES users(id),
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) WITHOUT ROWID;
