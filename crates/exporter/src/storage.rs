//! Where the lake's files go: a local directory, or an S3-compatible store by URL.

use std::sync::Arc;

use iceberg::io::{
    FileIO, FileIOBuilder, S3_ACCESS_KEY_ID, S3_ENDPOINT, S3_PATH_STYLE_ACCESS, S3_REGION,
    S3_SECRET_ACCESS_KEY,
};
use iceberg_storage_opendal::OpenDalStorageFactory;

use crate::Failure;

/// An S3-compatible store's settings; the keys come from the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), never from arguments.
#[derive(Debug, Clone, Default)]
pub struct S3 {
    /// For a store other than AWS (MinIO, Ceph, moto): its URL; path-style addressing.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// The warehouse's canonical location (what the catalog records) and the files' I/O.
pub fn open(warehouse: &str, s3: &S3) -> Result<(String, FileIO), Failure> {
    if let Some(rest) = warehouse.strip_prefix("s3://") {
        if rest.is_empty() || rest.starts_with('/') {
            return Err(Failure::Config(format!("warehouse {warehouse}: no bucket")));
        }
        let factory = OpenDalStorageFactory::S3 {
            configured_scheme: "s3".to_owned(),
            customized_credential_load: None,
        };
        let mut builder = FileIOBuilder::new(Arc::new(factory)).with_prop(S3_REGION, &s3.region);
        if let Some(endpoint) = &s3.endpoint {
            builder = builder
                .with_prop(S3_ENDPOINT, endpoint)
                .with_prop(S3_PATH_STYLE_ACCESS, "true");
        }
        if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
            builder = builder
                .with_prop(S3_ACCESS_KEY_ID, id)
                .with_prop(S3_SECRET_ACCESS_KEY, secret);
        }
        return Ok((warehouse.trim_end_matches('/').to_owned(), builder.build()));
    }
    let path = warehouse.strip_prefix("file://").unwrap_or(warehouse);
    if path.contains("://") {
        return Err(Failure::Config(format!(
            "unsupported warehouse {warehouse}: a local directory or s3://bucket/prefix"
        )));
    }
    std::fs::create_dir_all(path).map_err(|e| Failure::Config(format!("warehouse {path}: {e}")))?;
    // Absolute: the catalog's entries must mean the same to every reader.
    let absolute = std::fs::canonicalize(path)
        .map_err(|e| Failure::Config(format!("warehouse {path}: {e}")))?;
    Ok((
        format!("file://{}", absolute.display()),
        FileIO::new_with_fs(),
    ))
}
