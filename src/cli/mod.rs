//! Commands of the `onramp` binary whose logic is more than wiring, kept in the library
//! so the tests run them in-process against a real server.

pub mod flows;
