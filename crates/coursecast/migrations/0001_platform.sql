-- Accounts, courses and enrolment. Times are milliseconds since the epoch, ids UUID text.
CREATE TABLE users (
    id                TEXT PRIMARY KEY,
    email             TEXT NOT NULL UNIQUE,
    password_hash     TEXT NOT NULL,
    display_name      TEXT NOT NULL,
    role              TEXT NOT NULL CHECK (role IN ('STUDENT', 'PROFESSOR', 'ADMIN')),
    created_at        BIGINT NOT NULL,
    -- Seconds since the epoch; tokens with an earlier `iat` are revoked (logout).
    tokens_valid_from BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE courses (
    id           TEXT PRIMARY KEY,
    title        TEXT NOT NULL,
    professor_id TEXT NOT NULL REFERENCES users (id),
    created_at   BIGINT NOT NULL
);
CREATE INDEX courses_professor ON courses (professor_id);

CREATE TABLE course_members (
    course_id TEXT NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (course_id, user_id)
);
CREATE INDEX course_members_user ON course_members (user_id);
