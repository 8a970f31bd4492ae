//! Package-group steps: content-addressed uploads and the record that binds a group name to its content for good.

use std::io::Read;
use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;
use sha2::{Digest, Sha256};

use crate::aws::error::Context;
use crate::aws::read::{get_object_with, SHA256_METADATA};
use crate::aws::{base64, Aws, AwsError};
use crate::build::PackageGroupRecord;

/// Uploads a package to its content-addressed key unless an object is there already (the key holds the SHA-256,
/// so an object at it is this content). The file is hashed first — it may have changed since the plan was made —
/// and S3 checks the upload against the same SHA-256 (`x-amz-checksum-sha256`), so a file changed between the two
/// reads is refused too.
pub(super) async fn upload_package(
    aws: &Aws,
    bucket: &str,
    region: &str,
    key: &str,
    source: &Path,
    sha256: &str,
) -> Result<(), AwsError> {
    let client = aws.s3(region);
    let operation = format!("PutObject s3://{bucket}/{key}");
    let head = client.head_object().bucket(bucket).key(key).send().await;
    match head.during(format_args!("HeadObject s3://{bucket}/{key}")) {
        Ok(_) => return Ok(()),
        Err(e) if e.has_code("NotFound") || e.has_code("NoSuchKey") => {}
        Err(e) => return Err(e),
    }
    let path = source.to_owned();
    let digest = tokio::task::spawn_blocking(move || sha256_file(&path))
        .await
        .map_err(|e| AwsError::new(&operation, None, format!("hashing {}: {e}", source.display())))?
        .map_err(|e| AwsError::new(&operation, None, format!("reading {}: {e}", source.display())))?;
    if hex::encode(digest) != sha256 {
        return Err(AwsError::new(
            &operation,
            None,
            format!(
                "{} changed since the plan was made (sha256 {}, the plan has {sha256}): plan again",
                source.display(),
                hex::encode(digest)
            ),
        ));
    }
    let body = ByteStream::from_path(source)
        .await
        .map_err(|e| AwsError::new(&operation, None, format!("reading {}: {e}", source.display())))?;
    let request = client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body)
        .metadata(SHA256_METADATA, sha256)
        .checksum_sha256(base64(&digest));
    request.send().await.during(&operation).map(drop)
}

fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buffer[..n]);
    }
}

/// Writes the record only if no record exists (`If-None-Match: *`). When one does, the same content digest means
/// this step already ran (or another apply bound the same content); another digest means the name was used for
/// other content, which is final.
pub(super) async fn bind_package_group(
    aws: &Aws,
    bucket: &str,
    region: &str,
    key: &str,
    record: &PackageGroupRecord,
) -> Result<(), AwsError> {
    let client = aws.s3(region);
    let operation = format!("PutObject s3://{bucket}/{key}");
    let body = serde_json::to_vec_pretty(record).expect("records serialize");
    let request = client
        .put_object()
        .bucket(bucket)
        .key(key)
        .if_none_match("*")
        .content_type("application/json")
        .body(ByteStream::from(body));
    let error = match request.send().await.during(&operation) {
        Ok(_) => return Ok(()),
        // 412: a record exists; 409: another writer's conditional write of the same key is in flight.
        Err(e) if e.has_code("PreconditionFailed") || e.has_code("ConditionalRequestConflict") => e,
        Err(e) => return Err(e),
    };
    let existing = get_object_with(&client, bucket, key).await?;
    let existing: PackageGroupRecord = match existing {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            AwsError::new(
                &operation,
                error.code.as_deref(),
                format!("s3://{bucket}/{key} exists but is not a package-group record: {e}"),
            )
        })?,
        // Answered 409 and the other write did not land (or the record was deleted by hand): write again once.
        None => {
            let body = serde_json::to_vec_pretty(record).expect("records serialize");
            let retry = client.put_object().bucket(bucket).key(key).if_none_match("*").content_type("application/json");
            return retry.body(ByteStream::from(body)).send().await.during(&operation).map(drop);
        }
    };
    if existing.content_digest == record.content_digest {
        return Ok(());
    }
    Err(AwsError::new(
        &operation,
        error.code.as_deref(),
        format!(
            "package group `{}` is already bound to other content (digest {}…, this content {}…); a name can never be reused — bump its revision, e.g. {}",
            record.name,
            short(&existing.content_digest),
            short(&record.content_digest),
            next_revision_name(&record.name)
        ),
    ))
}

fn short(digest: &str) -> &str {
    &digest[..12.min(digest.len())]
}

/// `acme-agent-r1` → `acme-agent-r2`; a name without a revision gets `-r2`.
fn next_revision_name(name: &str) -> String {
    if let Some((stem, revision)) = name.rsplit_once("-r") {
        if let Ok(n) = revision.parse::<u32>() {
            return format!("{stem}-r{}", n + 1);
        }
    }
    format!("{name}-r2")
}

#[cfg(test)]
mod tests {
    use super::next_revision_name;

    #[test]
    fn revisions_bump() {
        assert_eq!(next_revision_name("acme-agent-r1"), "acme-agent-r2");
        assert_eq!(next_revision_name("acme-agent"), "acme-agent-r2");
        assert_eq!(next_revision_name("acme-r9"), "acme-r10");
    }
}
