-- Durable event streams (DESIGN.md principle 1). Every real-time event is a row of
-- `events`, stored with its stream's next `seq` in the transaction that changes the
-- state it describes; `payload` is the event exactly as delivered, so replay and
-- polling return the same bytes the sockets carried.
CREATE TABLE stream_heads (
    stream TEXT PRIMARY KEY,
    head   BIGINT NOT NULL
);

CREATE TABLE events (
    stream        TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    -- Who caused the event (user id or service name): scopes the idempotency key.
    actor_id      TEXT NOT NULL,
    client_msg_id TEXT,
    payload       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (stream, seq)
);
-- NULL client_msg_ids never collide, in either backend.
CREATE UNIQUE INDEX events_idempotency ON events (stream, actor_id, client_msg_id);

-- Current state that authorisation needs (who sent a message, is it deleted).
CREATE TABLE messages (
    id         TEXT PRIMARY KEY,
    course_id  TEXT NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    sender_id  TEXT NOT NULL,
    channel_id TEXT,
    deleted    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

CREATE TABLE notifications (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL,
    notification_type TEXT NOT NULL,
    title             TEXT NOT NULL,
    message           TEXT NOT NULL,
    priority          TEXT NOT NULL,
    read_at           BIGINT,
    created_at        BIGINT NOT NULL
);
CREATE INDEX notifications_user ON notifications (user_id);

CREATE TABLE analyses (
    id           TEXT PRIMARY KEY,
    course_id    TEXT NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    owner_id     TEXT NOT NULL,
    input        TEXT NOT NULL,
    progress     INTEGER NOT NULL DEFAULT 0,
    completed_at BIGINT,
    created_at   BIGINT NOT NULL
);
