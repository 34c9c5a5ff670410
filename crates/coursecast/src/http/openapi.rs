//! The HTTP API as an OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` attributes and the body types' `ToSchema` derives, and served
//! at `GET /api/openapi.json` (PROTOCOL.md section 2 in machine-readable form).
//!
//! To document a new route: put `#[utoipa::path(...)]` on its handler (success
//! bodies and the refusals particular to it, e.g. `NotFound`) and add the handler to
//! `paths(...)` below. The refusals every operation of its kind can get (400, 401,
//! 403, 413, 500, 503) are added by [`CommonRefusals`]. `tests/api/openapi.rs`
//! fails while a route the router answers is missing here, or the other way round.

use std::sync::LazyLock;

use axum::{
    Router,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use utoipa::{
    IntoParams, IntoResponses, Modify, OpenApi, PartialSchema, ToSchema,
    openapi::{
        self, KnownFormat, ObjectBuilder, RefOr, Required, SchemaFormat, Type,
        path::{Operation, ParameterBuilder, ParameterIn},
        schema::{AdditionalProperties, ArrayBuilder},
        security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme},
    },
};

use super::{
    admin, analyses, auth, courses, notifications, ops, realtime,
    refusals::{NotFound, json_response, refusal},
    sse, users,
};
use crate::{
    error::{ErrorCode, ErrorEnvelope},
    state::AppState,
    streams::{AnnotationEvent, MessageEvent, NotificationEvent, Owner, ProgressEvent, StreamKind},
};

#[derive(OpenApi)]
#[openapi(
    info(title = "coursecast", description = "The HTTP API of coursecast: the contract is docs/PROTOCOL.md."),
    paths(
        auth::register, auth::login, auth::logout, auth::me,
        users::create_user, users::delete_user,
        courses::create_course, courses::list_courses, courses::add_member, courses::list_members,
        notifications::notify,
        analyses::start, analyses::progress,
        realtime::presence, realtime::send_message, realtime::edit_message, realtime::delete_message,
        realtime::annotate, realtime::read_notification, realtime::ping, realtime::status, sse::open,
        admin::stats,
        ops::healthz, ops::readyz, metrics, openapi_json,
    ),
    components(schemas(ErrorEnvelope, MessageEvent, AnnotationEvent, NotificationEvent, ProgressEvent)),
    modifiers(&StreamPolls, &CommonRefusals, &SecuritySchemes),
)]
struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static openapi::OpenApi {
    static DOCUMENT: LazyLock<openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);
    &DOCUMENT
}

pub fn router() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(openapi_json))
}

/// This document (no token needed).
#[utoipa::path(get, path = "/api/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
async fn openapi_json() -> impl IntoResponse {
    static JSON: LazyLock<String> = LazyLock::new(|| document().to_json().expect("the OpenAPI document serialises"));
    ([(header::CONTENT_TYPE, "application/json")], JSON.as_str())
}

/// Prometheus metrics, on this port unless `METRICS_PORT` moves them. Only
/// described here: the route is `super::metrics_router`'s.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub fn metrics() {}

/// The polling route of every stream kind, `GET /api/realtime/<kind>/<owner id>`,
/// documented from the same list the router is built from (`StreamKind::ALL`).
struct StreamPolls;

impl Modify for StreamPolls {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        for kind in StreamKind::ALL {
            let (owner, who) = match kind.owner() {
                Owner::Course => ("course_id", "course members and ADMIN"),
                Owner::User => ("user_id", "the user and ADMIN"),
            };
            let owner_param =
                ParameterBuilder::new().name(owner).parameter_in(ParameterIn::Path).required(Required::True).schema(
                    Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                    ),
                );
            let page = ObjectBuilder::new()
                .property("events", ArrayBuilder::new().items(event_schema(kind)))
                .property("cursor", i64::schema())
                .property("hasMore", bool::schema())
                .required("events")
                .required("cursor")
                .required("hasMore")
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            let mut parameters = vec![owner_param.build()];
            parameters.extend(realtime::PollQuery::into_params(|| Some(ParameterIn::Query)));
            let mut operation = Operation::new();
            operation.tags = Some(vec!["realtime".into()]);
            operation.summary =
                Some(format!("A page of the {} stream after `since` ({who}); `wait` long-polls", kind.name()));
            operation.parameters = Some(parameters);
            operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
            operation.responses.responses.insert("200".into(), json_response("A page of events", page).into());
            operation.responses.responses.extend(NotFound::responses());
            let path = format!("/api/realtime/{}/{{{owner}}}", kind.name());
            // The messages and annotations paths also take the stream's POST.
            doc.paths.paths.entry(path).or_default().get = Some(operation);
        }
    }
}

/// The stored payload of each stream kind (PROTOCOL.md section 3, "Event payloads").
fn event_schema(kind: StreamKind) -> RefOr<openapi::Schema> {
    let name = match kind {
        StreamKind::Messages => MessageEvent::name(),
        StreamKind::Annotations => AnnotationEvent::name(),
        StreamKind::Notifications => NotificationEvent::name(),
        StreamKind::Progress => ProgressEvent::name(),
    };
    RefOr::Ref(openapi::Ref::from_schema_name(name))
}

/// The refusals an operation gets by its kind, added to every operation so that no
/// attribute has to repeat them: 500 and 503 (a failure of ours, a dependency down,
/// a request over its deadline) anywhere; 400 where there is input; 413 where there
/// is a body; 401 and 403 where a token is required (403: a user's token on a
/// service's endpoint or the other way round, or a role without the right). Answers
/// without a description get their status's reason phrase.
struct CommonRefusals;

impl Modify for CommonRefusals {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        for item in doc.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete, &mut item.put];
            for operation in operations.into_iter().flatten() {
                let has_body = operation.request_body.is_some();
                let has_input = has_body || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let needs_token = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let refusals: [(&[ErrorCode], bool); 6] = [
                    (&[ErrorCode::ValidationFailed], has_input),
                    (&[ErrorCode::TokenMissing, ErrorCode::TokenInvalid, ErrorCode::TokenExpired], needs_token),
                    (&[ErrorCode::Forbidden], needs_token),
                    (&[ErrorCode::PayloadTooLarge], has_body),
                    (&[ErrorCode::Internal], true),
                    (&[ErrorCode::Unavailable], true),
                ];
                for (codes, applies) in refusals {
                    if applies {
                        let (status, response) = refusal(codes);
                        operation.responses.responses.entry(status).or_insert(response);
                    }
                }
                for (status, response) in &mut operation.responses.responses {
                    if let RefOr::T(response) = response
                        && response.description.is_empty()
                    {
                        let reason = status.parse().ok().and_then(|s| StatusCode::from_u16(s).ok());
                        response.description = reason.and_then(|s| s.canonical_reason()).unwrap_or("").to_owned();
                    }
                }
            }
        }
    }
}

/// PROTOCOL.md section 1: user tokens, and service tokens for the service endpoints.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let jwt = |description: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.bearer_format = Some("JWT".into());
            http.description = Some(description.into());
            SecurityScheme::Http(http)
        };
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            jwt("A user's token (HS256; claims sub, role STUDENT | PROFESSOR | ADMIN, iat, exp)"),
        );
        components.add_security_scheme(
            "service",
            jwt("A service's token (HS256; role SERVICE, sub names the service); only where an operation lists it"),
        );
    }
}
