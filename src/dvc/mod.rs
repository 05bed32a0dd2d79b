//! DVC 3.x formats and data sync against an S3 remote (work in progress, issue #6).
