//! AWS credentials: the default provider chain and GitHub OIDC → STS (work in progress, issue #6).
