//! Who may do what with a course: the rules shared by the HTTP API, the sockets and
//! the polling endpoints, so both doors authorise identically.

use uuid::Uuid;

use crate::{
    auth::Identity,
    error::AppError,
    store::{Course, Store},
};

/// Loads a course or answers `NOT_FOUND`.
pub async fn find_course(store: &Store, course_id: Uuid) -> Result<Course, AppError> {
    store.course(course_id).await?.ok_or(AppError::NotFound("no such course"))
}

/// Members and ADMINs may read a course (chat, annotations, members); others get
/// `FORBIDDEN`, and an unknown course `NOT_FOUND`.
pub async fn require_course_reader(store: &Store, course_id: Uuid, me: &Identity) -> Result<Course, AppError> {
    let course = find_course(store, course_id).await?;
    if me.is_admin() || store.is_member(course_id, me.id).await? {
        Ok(course)
    } else {
        Err(AppError::Forbidden("you are not a member of this course"))
    }
}

/// The course's professor and ADMINs manage it (enrol, moderate, watch analyses).
pub fn manages(course: &Course, me: &Identity) -> bool {
    me.is_admin() || course.professor_id == me.id
}

/// A user's own streams (notifications, progress) are theirs and ADMINs' only.
pub fn require_self_or_admin(owner: Uuid, me: &Identity) -> Result<(), AppError> {
    if me.id == owner || me.is_admin() {
        Ok(())
    } else {
        Err(AppError::Forbidden("this stream belongs to another user"))
    }
}
