//! The custom scalars, described and tied to their specifications so code generators
//! can map them (`@specifiedBy`): `DateTime` (RFC 3339) and `JSON` (ECMA-404).

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

/// What `DateTime` means on the wire. chrono's `DateTime<Utc>` is the scalar (it already
/// names RFC 3339 in `specifiedBy`); only its description, which names the Rust type, is
/// replaced when the schema is built.
pub const DATE_TIME_DESCRIPTION: &str = "An instant, as an RFC 3339 date-time string with an offset, e.g.
`2026-12-03T10:00:00Z` or `2026-12-03T11:00:00.5+01:00`. Output is always in UTC, written
`+00:00`, with 0, 3 or 6 fractional digits (instants are kept to the microsecond).";

/// A JSON value; see the scalar's description below.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Json(pub serde_json::Value);

/// Any JSON value (ECMA-404): an object, array, string, number, boolean or null. Written
/// inline as a GraphQL value (`{ plan: "team" }`) or passed in variables as plain JSON;
/// returned as JSON, not as a string. Where an object is expected the field says so.
#[Scalar(
    name = "JSON",
    specified_by_url = "https://www.ecma-international.org/publications-and-standards/standards/ecma-404/"
)]
impl ScalarType for Json {
    fn parse(value: Value) -> InputValueResult<Self> {
        // Enum literals are not JSON; everything else maps one to one.
        match value.into_json() {
            Ok(json) => Ok(Json(json)),
            Err(e) => Err(InputValueError::custom(format!("not a JSON value: {e}"))),
        }
    }

    fn to_value(&self) -> Value {
        Value::from_json(self.0.clone()).unwrap_or(Value::Null)
    }
}
