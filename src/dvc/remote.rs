//! The S3 remote (`s3://bucket/prefix`), through aws-sdk-s3 and the default credential chain.
//! An endpoint (moto, MinIO, …) switches to path-style addressing, as s3fs does for them; which
//! endpoint, if any, is [`super::trust`]'s decision, made before this module connects.
//!
//! Downloads stream into a temp file next to the cache entry while hashing; only an object whose
//! md5 matches its id is renamed into place, so a corrupted or truncated object never reaches
//! the cache (and, through it, the workspace).

use std::io::Write;
use std::path::Path;

use aws_config::BehaviorVersion;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use md5::{Digest, Md5};

use super::DvcError;
use super::cache::{Cache, ObjectId};
use super::config::RemoteConfig;

/// A connected S3 remote.
#[derive(Debug, Clone)]
pub struct S3Remote {
    client: aws_sdk_s3::Client,
    pub bucket: String,
    pub prefix: String,
    pub url: String,
}

/// Splits `s3://bucket/some/prefix` into bucket and prefix (no leading/trailing `/`).
pub fn parse_s3_url(url: &str) -> Result<(String, String), DvcError> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| DvcError::UnsupportedRemote {
            url: url.to_string(),
        })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(DvcError::UnsupportedRemote {
            url: url.to_string(),
        });
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

impl S3Remote {
    /// Builds a client from the remote's settings and the default AWS provider chain (env,
    /// profile, web identity, IMDS, …). `endpoint` is the one [`super::trust`] chose; the
    /// remote's own `endpointurl` is not read here.
    pub async fn connect(cfg: &RemoteConfig, endpoint: Option<&str>) -> Result<S3Remote, DvcError> {
        let (bucket, prefix) = parse_s3_url(&cfg.url)?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &cfg.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk);
        if sdk.region().is_none() {
            // s3fs (and so dvc) defaults to us-east-1 when nothing names a region.
            builder = builder.region(aws_config::Region::new("us-east-1"));
        }
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint).force_path_style(true);
        }
        Ok(S3Remote {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket,
            prefix,
            url: cfg.url.clone(),
        })
    }

    /// The object key of `id` in the bucket.
    pub fn key(&self, id: &ObjectId) -> String {
        if self.prefix.is_empty() {
            id.rel_key()
        } else {
            format!("{}/{}", self.prefix, id.rel_key())
        }
    }

    fn s3_url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Whether the remote holds `id`.
    pub async fn exists(&self, id: &ObjectId) -> Result<bool, DvcError> {
        let key = self.key(id);
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(DvcError::Remote {
                url: self.s3_url(&key),
                message: DisplayErrorContext(&e).to_string(),
            }),
        }
    }

    /// Downloads `id` into `cache`, verifying its md5 before it gets its name. `label` names the
    /// object for people (the workspace path it belongs to). Returns the bytes transferred.
    pub async fn fetch(&self, id: &ObjectId, cache: &Cache, label: &str) -> Result<u64, DvcError> {
        let key = self.key(id);
        let url = self.s3_url(&key);
        let resp = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(DvcError::MissingInRemote {
                    name: label.to_string(),
                    url,
                });
            }
            Err(e) => {
                return Err(DvcError::Remote {
                    url,
                    message: DisplayErrorContext(&e).to_string(),
                });
            }
        };
        let mut body = resp.body;
        let mut tmp = cache.temp_for(id)?;
        let mut hasher = Md5::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| DvcError::Remote {
                url: url.clone(),
                message: DisplayErrorContext(&e).to_string(),
            })?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            tmp.write_all(&chunk).map_err(|source| DvcError::Io {
                what: "write",
                path: tmp.path().to_path_buf(),
                source,
            })?;
        }
        let actual = hex::encode(hasher.finalize());
        let legacy_bytes = if id.legacy && actual != id.md5 {
            fs_err::read(tmp.path()).ok()
        } else {
            None
        };
        if !id.matches(&actual, legacy_bytes.as_deref()) {
            // `tmp` is dropped (deleted) here: nothing unverified stays behind.
            return Err(DvcError::Corrupt {
                name: label.to_string(),
                url,
                expected: id.md5.clone(),
                actual,
            });
        }
        cache.commit(id, tmp)?;
        Ok(size)
    }

    /// Uploads the cache file `path` as `id`.
    pub async fn upload(&self, id: &ObjectId, path: &Path) -> Result<u64, DvcError> {
        let key = self.key(id);
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| DvcError::Io {
                what: "read",
                path: path.to_path_buf(),
                source: std::io::Error::other(e),
            })?;
        let size = body.size_hint().0;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(body)
            .send()
            .await
            .map_err(|e| DvcError::Remote {
                url: self.s3_url(&key),
                message: DisplayErrorContext(&e).to_string(),
            })?;
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_split_into_bucket_and_prefix() {
        assert_eq!(
            parse_s3_url("s3://b/some/prefix/").unwrap(),
            ("b".to_string(), "some/prefix".to_string())
        );
        assert_eq!(parse_s3_url("s3://b").unwrap(), ("b".into(), "".into()));
        assert!(parse_s3_url("gs://b/x").is_err());
        assert!(parse_s3_url("s3:///x").is_err());
    }
}
