//! MLflow tracking and registry over its REST API (work in progress, issue #6).
