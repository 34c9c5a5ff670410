//! Courses and enrolment. A course's professor is also its first member, so every
//! "is a member" check covers them.

use serde::Serialize;
use uuid::Uuid;

use super::{Store, is_foreign_key_violation, is_unique_violation, parse_stored_id, with_db};
use crate::{
    domain::{CourseTitle, Role},
    error::AppError,
    streams::Timestamp,
};

/// The contract's `Course` object.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Course {
    pub id: Uuid,
    pub title: String,
    pub professor_id: Uuid,
    pub created_at: Timestamp,
}

/// The contract's `Member` object.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub user_id: Uuid,
    pub display_name: String,
    pub role: Role,
}

#[derive(sqlx::FromRow)]
struct CourseRow {
    id: String,
    title: String,
    professor_id: String,
    created_at: i64,
}

impl TryFrom<CourseRow> for Course {
    type Error = sqlx::Error;

    fn try_from(row: CourseRow) -> Result<Self, Self::Error> {
        Ok(Course {
            id: parse_stored_id(&row.id)?,
            title: row.title,
            professor_id: parse_stored_id(&row.professor_id)?,
            created_at: Timestamp(row.created_at),
        })
    }
}

impl Store {
    /// Creates a course taught by `professor_id`, who becomes its first member.
    pub async fn create_course(&self, title: CourseTitle, professor_id: Uuid) -> Result<Course, AppError> {
        let course =
            Course { id: Uuid::new_v4(), title: title.into_inner(), professor_id, created_at: Timestamp::now() };
        with_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO courses (id, title, professor_id, created_at) VALUES ($1, $2, $3, $4)")
                .bind(course.id.to_string())
                .bind(&course.title)
                .bind(professor_id.to_string())
                .bind(course.created_at.0)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO course_members (course_id, user_id, joined_at) VALUES ($1, $2, $3)")
                .bind(course.id.to_string())
                .bind(professor_id.to_string())
                .bind(course.created_at.0)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })?;
        Ok(course)
    }

    pub async fn course(&self, id: Uuid) -> Result<Option<Course>, AppError> {
        if let Some(course) = self.known.course(id) {
            return Ok(Some(course));
        }
        let row: Option<CourseRow> = with_db!(self, read, pool => {
            sqlx::query_as("SELECT id, title, professor_id, created_at FROM courses WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(pool)
                .await
        })?;
        let course = row.map(Course::try_from).transpose()?;
        if let Some(course) = &course {
            self.known.remember_course(course);
        }
        Ok(course)
    }

    /// The first course with this title taught by this professor (the seed's lookup).
    pub async fn course_by_title(&self, title: &str, professor_id: Uuid) -> Result<Option<Course>, AppError> {
        let row: Option<CourseRow> = with_db!(self, read, pool => {
            sqlx::query_as(
                "SELECT id, title, professor_id, created_at FROM courses
                 WHERE title = $1 AND professor_id = $2 ORDER BY created_at, id LIMIT 1",
            )
            .bind(title)
            .bind(professor_id.to_string())
            .fetch_optional(pool)
            .await
        })?;
        Ok(row.map(Course::try_from).transpose()?)
    }

    /// Every course (`None`) or the courses `user` belongs to, oldest first.
    pub async fn courses(&self, user: Option<Uuid>) -> Result<Vec<Course>, AppError> {
        let rows: Vec<CourseRow> = with_db!(self, read, pool => match user {
            None => sqlx::query_as("SELECT id, title, professor_id, created_at FROM courses ORDER BY created_at, id")
                .fetch_all(pool)
                .await,
            Some(user) => sqlx::query_as(
                "SELECT c.id, c.title, c.professor_id, c.created_at
                 FROM courses c JOIN course_members m ON m.course_id = c.id
                 WHERE m.user_id = $1 ORDER BY c.created_at, c.id",
            )
            .bind(user.to_string())
            .fetch_all(pool)
            .await,
        })?;
        Ok(rows.into_iter().map(Course::try_from).collect::<Result<_, _>>()?)
    }

    /// Enrols a user. `CONFLICT` if already a member, `NOT_FOUND` if the user is unknown.
    pub async fn add_member(&self, course_id: Uuid, user_id: Uuid) -> Result<Member, AppError> {
        let result = with_db!(self, write, pool => {
            sqlx::query("INSERT INTO course_members (course_id, user_id, joined_at) VALUES ($1, $2, $3)")
                .bind(course_id.to_string())
                .bind(user_id.to_string())
                .bind(Timestamp::now().0)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        });
        match result {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(AppError::Conflict("the user is already a member")),
            Err(e) if is_foreign_key_violation(&e) => return Err(AppError::NotFound("no such user")),
            Err(e) => return Err(e.into()),
        }
        let user = self.user(user_id).await?.ok_or(AppError::NotFound("no such user"))?;
        Ok(Member { user_id, display_name: user.display_name, role: user.role })
    }

    /// Enrols many users at once, skipping existing members (the seed's bulk path).
    pub async fn ensure_members(&self, course_id: Uuid, users: &[Uuid]) -> Result<(), AppError> {
        let now = Timestamp::now().0;
        with_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            for chunk in users.chunks(1000) {
                let mut insert = sqlx::QueryBuilder::new("INSERT INTO course_members (course_id, user_id, joined_at) ");
                insert.push_values(chunk, |mut row, user| {
                    row.push_bind(course_id.to_string()).push_bind(user.to_string()).push_bind(now);
                });
                insert.push(" ON CONFLICT (course_id, user_id) DO NOTHING");
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    pub async fn members(&self, course_id: Uuid) -> Result<Vec<Member>, AppError> {
        let rows: Vec<(String, String, String)> = with_db!(self, read, pool => {
            sqlx::query_as(
                "SELECT u.id, u.display_name, u.role FROM course_members m JOIN users u ON u.id = m.user_id
                 WHERE m.course_id = $1 ORDER BY m.joined_at, u.id",
            )
            .bind(course_id.to_string())
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter()
            .map(|(id, display_name, role)| {
                Ok(Member { user_id: parse_stored_id(&id)?, display_name, role: role.parse()? })
            })
            .collect()
    }

    /// Whether `user` is a member of a course `professor` teaches.
    pub async fn teaches_member(&self, professor: Uuid, user: Uuid) -> Result<bool, AppError> {
        let row: Option<(i32,)> = with_db!(self, read, pool => {
            sqlx::query_as(
                "SELECT 1 FROM courses c JOIN course_members m ON m.course_id = c.id
                 WHERE c.professor_id = $1 AND m.user_id = $2 LIMIT 1",
            )
            .bind(professor.to_string())
            .bind(user.to_string())
            .fetch_optional(pool)
            .await
        })?;
        Ok(row.is_some())
    }

    pub async fn is_member(&self, course_id: Uuid, user_id: Uuid) -> Result<bool, AppError> {
        if self.known.is_member(course_id, user_id) {
            return Ok(true);
        }
        let row: Option<(i32,)> = with_db!(self, read, pool => {
            sqlx::query_as("SELECT 1 FROM course_members WHERE course_id = $1 AND user_id = $2")
                .bind(course_id.to_string())
                .bind(user_id.to_string())
                .fetch_optional(pool)
                .await
        })?;
        if row.is_some() {
            self.known.remember_member(course_id, user_id);
        }
        Ok(row.is_some())
    }
}
