//! `/metrics`, in the Prometheus text format.
use crate::State;
use axum::Router;
pub fn routes() -> Router<State> {
    Router::new()
}
