//! A middleware that notes something about each request and acts on its response.
//!
//! `axum::middleware::from_fn` clones the whole service stack below it and boxes it
//! on every request; with several of them around every route, that cloning and
//! dropping was the largest share of a long poll's cost in the profile. This one
//! calls the inner service in place: two plain functions, no clone, no box.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    extract::Request,
    http::{HeaderMap, Response, StatusCode},
};
use tower::{Layer, Service};

/// `before` runs as the request arrives; `after` gets its note with the response's
/// status and headers (which it may change).
pub struct Around<T> {
    pub before: fn(&Request) -> T,
    pub after: fn(T, StatusCode, &mut HeaderMap),
}

impl<T> Clone for Around<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Around<T> {}

impl<S, T> Layer<S> for Around<T> {
    type Service = AroundService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        AroundService { inner, around: *self }
    }
}

pub struct AroundService<S, T> {
    inner: S,
    around: Around<T>,
}

impl<S: Clone, T> Clone for AroundService<S, T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), around: self.around }
    }
}

impl<S, T, B> Service<Request> for AroundService<S, T>
where
    S: Service<Request, Response = Response<B>>,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = AroundFuture<S::Future, T>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let note = (self.around.before)(&request);
        AroundFuture { inner: self.inner.call(request), note: Some(note), after: self.around.after }
    }
}

pin_project_lite::pin_project! {
    pub struct AroundFuture<F, T> {
        #[pin]
        inner: F,
        note: Option<T>,
        after: fn(T, StatusCode, &mut HeaderMap),
    }
}

impl<F, T, B, E> Future for AroundFuture<F, T>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(note) = this.note.take() {
            let status = response.status();
            (this.after)(note, status, response.headers_mut());
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::{body::Body, http::HeaderValue};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn notes_the_request_and_edits_the_response() {
        let around = Around {
            before: |request: &Request| request.uri().path().to_owned(),
            after: |path: String, status: StatusCode, headers: &mut HeaderMap| {
                let seen = format!("{path} {}", status.as_u16());
                headers.insert("x-seen", HeaderValue::from_str(&seen).expect("header"));
            },
        };
        let inner = tower::service_fn(|_: Request| async {
            Ok::<_, Infallible>(Response::builder().status(StatusCode::CREATED).body(Body::empty()).expect("response"))
        });
        let response = around.layer(inner).oneshot(Request::get("/a/b").body(Body::empty()).expect("request")).await;
        let response = response.expect("infallible");
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()["x-seen"], "/a/b 201");
    }
}
