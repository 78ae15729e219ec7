//! Where blobs (images' originals and renditions) are stored, from one URL:
//! a directory (`file:///var/lib/chronicle/images`, or a plain path) by
//! default, or an S3-compatible bucket (`s3://bucket/prefix`, configured by
//! the usual `AWS_*` variables) in a build with the `s3` feature.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

#[derive(Debug, thiserror::Error)]
pub enum ObjectStorageError {
    #[error("object store {url}: {source}")]
    Open {
        url: String,
        source: object_store::Error,
    },
    #[error("object store directory {path}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
    #[error("object store {0}: this build has no S3 support (build with the `s3` feature)")]
    NoS3(String),
    #[error("object store {0}: not a file:// or s3:// URL, nor a path")]
    Unsupported(String),
}

pub fn open(url: &str) -> Result<Arc<dyn ObjectStore>, ObjectStorageError> {
    let path = match url.split_once("://") {
        None => url,
        Some(("file", path)) => path,
        Some(("s3", _)) => return open_s3(url),
        Some(_) => return Err(ObjectStorageError::Unsupported(url.to_owned())),
    };
    std::fs::create_dir_all(path).map_err(|source| ObjectStorageError::Directory {
        path: path.to_owned(),
        source,
    })?;
    let store = LocalFileSystem::new_with_prefix(path)
        .map_err(|source| ObjectStorageError::Open {
            url: url.to_owned(),
            source,
        })?
        // Deleting a blob also removes the directories it leaves empty.
        .with_automatic_cleanup(true);
    Ok(Arc::new(store))
}

#[cfg(feature = "s3")]
fn open_s3(url: &str) -> Result<Arc<dyn ObjectStore>, ObjectStorageError> {
    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_url(url)
        .build()
        .map_err(|source| ObjectStorageError::Open {
            url: url.to_owned(),
            source,
        })?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "s3"))]
fn open_s3(url: &str) -> Result<Arc<dyn ObjectStore>, ObjectStorageError> {
    Err(ObjectStorageError::NoS3(url.to_owned()))
}
