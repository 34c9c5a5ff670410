//! Analyses: the subject of a user's progress stream. Progress itself is appended
//! through `appends` like every other event.

use uuid::Uuid;

use super::{Store, with_db};
use crate::{error::AppError, streams::Timestamp};

impl Store {
    pub async fn create_analysis(
        &self,
        course_id: Uuid,
        owner_id: Uuid,
        input: &serde_json::Value,
    ) -> Result<Uuid, AppError> {
        let id = Uuid::new_v4();
        let input = serde_json::to_string(input).map_err(AppError::internal)?;
        with_db!(self, write, pool => {
            sqlx::query("INSERT INTO analyses (id, course_id, owner_id, input, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(id.to_string())
                .bind(course_id.to_string())
                .bind(owner_id.to_string())
                .bind(&input)
                .bind(Timestamp::now().0)
                .execute(pool)
                .await
                .map(drop)
        })?;
        Ok(id)
    }
}
