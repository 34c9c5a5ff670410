//! Demo data (PROTOCOL.md section 4): one admin, one professor, one course and N
//! enrolled students, with tokens, written as JSON. Idempotent: accounts are found by
//! email, so a second run adds only what is missing. The demo password is hashed once
//! and the users are inserted in bulk, so N = 10,000 takes seconds.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use uuid::Uuid;

use crate::{
    auth::{JwtKeys, hash_password, resolve_jwt_secret},
    config::Settings,
    domain::{CourseTitle, DisplayName, Email, Role},
    store::{NewUser, Store, User},
};

/// Every seeded account's password.
pub const DEMO_PASSWORD: &str = "coursecast-demo";
const COURSE_TITLE: &str = "Demo course";
/// Seeded tokens are valid this long.
const TOKEN_TTL_SECS: i64 = 24 * 3600;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedOutput {
    pub course_id: Uuid,
    pub admin: SeededUser,
    pub professor: SeededUser,
    pub users: Vec<SeededUser>,
}

#[derive(Serialize)]
pub struct SeededUser {
    pub id: Uuid,
    pub email: String,
    pub password: &'static str,
    pub token: String,
}

pub async fn run(settings: &Settings, students: usize, out: &Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let secret = resolve_jwt_secret(settings.jwt_secret.as_deref(), &settings.data_dir)?;
    let keys = JwtKeys::new(&secret, settings);
    let store = Store::connect(settings).await?;
    let output = seed(&store, &keys, students).await?;
    store.close().await;
    let json = serde_json::to_vec_pretty(&output)?;
    std::fs::write(out, json).with_context(|| format!("writing {}", out.display()))?;
    tracing::info!(students, out = %out.display(), elapsed_ms = started.elapsed().as_millis() as u64, "seeded");
    Ok(())
}

pub async fn seed(store: &Store, keys: &JwtKeys, students: usize) -> anyhow::Result<SeedOutput> {
    let hash = tokio::task::spawn_blocking(|| hash_password(DEMO_PASSWORD)).await??;
    let account = |email: String, name: String, role: Role| -> anyhow::Result<NewUser> {
        Ok(NewUser {
            email: Email::parse(&email)?,
            password_hash: hash.clone(),
            display_name: DisplayName::parse(&name)?,
            role,
        })
    };
    let mut accounts = vec![
        account("admin@coursecast.local".into(), "Demo Admin".into(), Role::Admin)?,
        account("professor@coursecast.local".into(), "Demo Professor".into(), Role::Professor)?,
    ];
    for i in 1..=students {
        accounts.push(account(format!("student{i:05}@coursecast.local"), format!("Student {i}"), Role::Student)?);
    }
    let users = store.ensure_users(&accounts).await?;
    let (admin, professor, students) = match users.as_slice() {
        [admin, professor, students @ ..] => (admin, professor, students),
        _ => anyhow::bail!("seeding returned too few users"),
    };
    let course = match store.course_by_title(COURSE_TITLE, professor.id).await? {
        Some(course) => course,
        None => store.create_course(CourseTitle::parse(COURSE_TITLE)?, professor.id).await?,
    };
    let ids: Vec<Uuid> = students.iter().map(|u| u.id).collect();
    store.ensure_members(course.id, &ids).await?;

    let seeded = |user: &User| -> anyhow::Result<SeededUser> {
        let (token, _) = keys.issue_for(&user.id.to_string(), user.role.as_str(), 0, TOKEN_TTL_SECS)?;
        Ok(SeededUser { id: user.id, email: user.email.clone(), password: DEMO_PASSWORD, token })
    };
    Ok(SeedOutput {
        course_id: course.id,
        admin: seeded(admin)?,
        professor: seeded(professor)?,
        users: students.iter().map(seeded).collect::<anyhow::Result<_>>()?,
    })
}
