//! GraphQL over HTTP (the GraphQL Foundation's draft spec): which media type a response
//! is sent as, and which status code a failed request gets under it.
//!
//! `application/json` is what every client understands: well-formed requests answer 200
//! whatever their errors. `application/graphql-response+json` says more: a request that
//! never reached execution (a parse, validation or variable-coercion failure) answers 400
//! without a `data` entry, so a client can tell "your request is wrong" from "a field
//! failed" by the status alone.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

pub const JSON: &str = "application/json; charset=utf-8";
pub const GRAPHQL_RESPONSE: &str = "application/graphql-response+json; charset=utf-8";

/// The media type a response goes out as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Json,
    GraphQLResponse,
}

impl Answer {
    /// From the request's Accept header: the GraphQL response type when the client lists
    /// it (and does not refuse it with q=0), JSON otherwise, including when Accept is
    /// missing, `*/*`, or names neither (a client that sent a GraphQL request reads JSON).
    pub fn of(headers: &HeaderMap) -> Answer {
        let accepts_graphql =
            headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
                |range| {
                    let mut parts = range.split(';').map(str::trim);
                    let media = parts.next().unwrap_or("");
                    let refused = parts
                        .any(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()).is_some_and(|q| q <= 0.0));
                    media.eq_ignore_ascii_case("application/graphql-response+json") && !refused
                },
            );
        if accepts_graphql { Answer::GraphQLResponse } else { Answer::Json }
    }

    pub fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Answer::Json => JSON,
            Answer::GraphQLResponse => GRAPHQL_RESPONSE,
        })
    }

    /// The status of a response: 400 for a request error under the GraphQL response type,
    /// 200 otherwise.
    pub fn status(self, request_error: bool) -> StatusCode {
        match (self, request_error) {
            (Answer::GraphQLResponse, true) => StatusCode::BAD_REQUEST,
            _ => StatusCode::OK,
        }
    }
}

/// Whether a POST body is declared as JSON, the one request type /graphql reads.
/// (`application/json` with any parameters; a charset, if given, must be UTF-8.)
pub fn is_json_body(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = value.split(';').map(str::trim);
    let media_is_json = parts.next().is_some_and(|m| m.eq_ignore_ascii_case("application/json"));
    let charset_ok = parts.all(|p| match p.split_once('=') {
        Some((name, charset)) if name.trim().eq_ignore_ascii_case("charset") => {
            charset.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    });
    media_is_json && charset_ok
}

/// Whether a response is a request error: it never reached execution, so it has no data
/// and none of its errors belongs to a field (field errors carry a `path`).
pub fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: header::HeaderName, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn the_answer_follows_accept() {
        let accept = |v| Answer::of(&headers(header::ACCEPT, v));
        assert_eq!(Answer::of(&HeaderMap::new()), Answer::Json);
        assert_eq!(accept("*/*"), Answer::Json);
        assert_eq!(accept("application/json"), Answer::Json);
        assert_eq!(accept("text/html"), Answer::Json);
        assert_eq!(accept("application/graphql-response+json"), Answer::GraphQLResponse);
        assert_eq!(accept("application/json;q=0.9, application/graphql-response+json"), Answer::GraphQLResponse);
        assert_eq!(accept("application/graphql-response+json;q=0, application/json"), Answer::Json);
    }

    #[test]
    fn only_json_bodies_are_read() {
        let body = |v| is_json_body(&headers(header::CONTENT_TYPE, v));
        assert!(!is_json_body(&HeaderMap::new()));
        assert!(body("application/json"));
        assert!(body("Application/JSON; charset=UTF-8"));
        assert!(body("application/json; charset=\"utf-8\""));
        assert!(!body("application/json; charset=latin1"));
        assert!(!body("text/plain"));
        assert!(!body("application/graphql"));
    }

    #[test]
    fn request_errors_have_no_data_and_no_field_errors() {
        let refused = async_graphql::Response::from_errors(vec![async_graphql::ServerError::new("bad", None)]);
        assert!(is_request_error(&refused));
        let mut field_error = async_graphql::ServerError::new("a field failed", None);
        field_error.path = vec![async_graphql::PathSegment::Field("status".into())];
        let failed = async_graphql::Response::from_errors(vec![field_error]);
        assert!(!is_request_error(&failed), "a failed non-null root field is an execution error");
        assert!(!is_request_error(&async_graphql::Response::new(async_graphql::Value::Null)));
    }
}
