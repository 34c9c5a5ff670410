//! The refusals an operation can get, as OpenAPI responses: each in the contract's
//! error shape with its `code` narrowed to the codes it carries. Handlers name theirs
//! in `#[utoipa::path(responses(...))]`; `openapi.rs` adds the ones every operation of
//! a kind gets.

use std::collections::BTreeMap;

use utoipa::{
    IntoResponses, PartialSchema, ToSchema,
    openapi::{
        self, AllOfBuilder, ContentBuilder, HeaderBuilder, ObjectBuilder, RefOr, Response, ResponseBuilder, Type,
    },
};

use crate::error::{ErrorCode, ErrorEnvelope};

/// The refusals particular to an operation, named in its `responses(...)` after their
/// contract code.
macro_rules! refusals {
    ($($code:ident),* $(,)?) => {$(
        pub struct $code;

        impl IntoResponses for $code {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([refusal(&[ErrorCode::$code])])
            }
        }
    )*};
}

refusals!(InvalidCredentials, NotFound, Conflict, RateLimited);

/// A refusal with one of `codes` (all of one status): the contract's error shape, its
/// `code` narrowed to them.
pub(super) fn refusal(codes: &[ErrorCode]) -> (String, RefOr<Response>) {
    let status = codes[0].status();
    let names: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    let code = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names.clone()));
    let narrowed = ObjectBuilder::new().property("error", ObjectBuilder::new().property("code", code));
    let schema = AllOfBuilder::new().item(ErrorEnvelope::schema_ref()).item(narrowed);
    let mut response = json_response(&format!("Refused: {}", names.join(" or ")), schema);
    if codes.contains(&ErrorCode::RateLimited) {
        let seconds = HeaderBuilder::new().schema(u64::schema()).description(Some("Seconds until a retry may succeed"));
        response.headers.insert("Retry-After".into(), seconds.build());
    }
    (status.as_str().to_owned(), response.into())
}

pub(super) fn json_response(description: &str, schema: impl Into<RefOr<openapi::Schema>>) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(schema)).build())
        .build()
}

trait SchemaRef {
    fn schema_ref() -> RefOr<openapi::Schema>;
}

impl<T: ToSchema> SchemaRef for T {
    fn schema_ref() -> RefOr<openapi::Schema> {
        RefOr::Ref(openapi::Ref::from_schema_name(T::name()))
    }
}
