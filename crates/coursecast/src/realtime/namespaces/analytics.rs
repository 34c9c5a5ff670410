//! `/analytics`: analysis progress. Owners receive their own progress (user room);
//! a course's professor and ADMINs may `watch` a course to receive its progress too.

use std::sync::Arc;

use serde::Deserialize;
use socketioxide::extract::SocketRef;

use super::{notifications::SyncPayload, sync_reply};
use crate::{
    domain::parse_id,
    error::AppError,
    events::interest::Scope,
    realtime::{
        Session,
        catalog::client,
        dispatch::{Ctx, Reply},
        rooms,
    },
    state::AppState,
    streams::StreamKey,
};

pub fn register(socket: &SocketRef, session: &Arc<Session>, state: &AppState) {
    route!(socket, session, state, client::SYNC => sync);
    route!(socket, session, state, client::WATCH => watch);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WatchPayload {
    course_id: String,
}

async fn sync(state: &AppState, ctx: Ctx, payload: SyncPayload) -> Result<Reply, AppError> {
    sync_reply(state, StreamKey::progress(ctx.session.user.id), payload).await
}

async fn watch(state: &AppState, ctx: Ctx, payload: WatchPayload) -> Result<Reply, AppError> {
    let course_id = parse_id(&payload.course_id, "courseId")?;
    state.commands.authorize_watch(&ctx.session.user, course_id).await?;
    ctx.socket.join(rooms::watch(course_id));
    state.interest.want(Scope::Course(course_id)).await;
    Ok(Reply::new())
}
