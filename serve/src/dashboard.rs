//! The dashboard.
use crate::State;
use axum::Router;
pub fn routes() -> Router<State> {
    Router::new()
}
