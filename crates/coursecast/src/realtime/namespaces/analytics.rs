//! `/analytics`: analysis progress. Owners receive their own progress (user room);
//! a course's professor and ADMINs may `watch` a course to receive its progress too.

use std::sync::Arc;

use serde::Deserialize;
use socketioxide::extract::SocketRef;

use super::{notifications::SyncPayload, sync_reply};
use crate::{
    access::{find_course, manages},
    domain::parse_id,
    error::AppError,
    events::StreamKey,
    realtime::{
        Session,
        dispatch::{Ctx, Reply},
        rooms,
    },
    state::AppState,
};

pub fn register(socket: &SocketRef, session: &Arc<Session>, state: &AppState) {
    route!(socket, session, state, "sync" => sync);
    route!(socket, session, state, "watch" => watch);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WatchPayload {
    course_id: String,
}

async fn sync(state: &AppState, ctx: Ctx, payload: SyncPayload) -> Result<Reply, AppError> {
    sync_reply(state, StreamKey::Progress(ctx.session.user.id), payload).await
}

async fn watch(state: &AppState, ctx: Ctx, payload: WatchPayload) -> Result<Reply, AppError> {
    let course = find_course(&state.store, parse_id(&payload.course_id, "courseId")?).await?;
    if !manages(&course, &ctx.session.user) {
        return Err(AppError::Forbidden("only the course's professor or an ADMIN may watch its analyses"));
    }
    ctx.socket.join(rooms::watch(course.id));
    Ok(Reply::new())
}
