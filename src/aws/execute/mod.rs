//! Executes plan steps, one function per `Step` variant. Each is idempotent, because an apply may be retried or
//! resumed after any step: "already done" answers count as success, and a create that finds the resource checks
//! by its ownership tags that it is the one this step would have made.

mod distribution;
mod iam;
mod images;
mod packages;
mod s3;
mod sns;

use super::{Aws, AwsError};
use crate::live::{RESOURCE_TAG, STACK_TAG};
use crate::model::Tags;
use crate::plan::step::Step;

pub(super) async fn execute(aws: &Aws, step: &Step) -> Result<(), AwsError> {
    match step {
        Step::CreateRole { name, path, trust_policy, description, max_session_duration, tags } => {
            iam::create_role(aws, name, path, trust_policy, description.as_deref(), *max_session_duration, tags).await
        }
        Step::UpdateTrustPolicy { role, document } => iam::update_trust_policy(aws, role, document).await,
        Step::UpdateRole { role, description, max_session_duration } => {
            iam::update_role(aws, role, description.as_deref(), *max_session_duration).await
        }
        Step::PutRolePolicy { role, policy, document } => iam::put_role_policy(aws, role, policy, document).await,
        Step::DeleteRolePolicy { role, policy } => iam::delete_role_policy(aws, role, policy).await,
        Step::AttachRolePolicy { role, policy_arn } => iam::attach_role_policy(aws, role, policy_arn).await,
        Step::DetachRolePolicy { role, policy_arn } => iam::detach_role_policy(aws, role, policy_arn).await,
        Step::TagRole { role, tags } => iam::tag_role(aws, role, tags).await,
        Step::UntagRole { role, keys } => iam::untag_role(aws, role, keys).await,
        Step::DeleteRole { role } => iam::delete_role(aws, role).await,

        Step::CreateInstanceProfile { name, path, tags } => iam::create_instance_profile(aws, name, path, tags).await,
        Step::AddRoleToInstanceProfile { profile, role } => iam::add_role_to_instance_profile(aws, profile, role).await,
        Step::RemoveRoleFromInstanceProfile { profile, role } => {
            iam::remove_role_from_instance_profile(aws, profile, role).await
        }
        Step::TagInstanceProfile { profile, tags } => iam::tag_instance_profile(aws, profile, tags).await,
        Step::UntagInstanceProfile { profile, keys } => iam::untag_instance_profile(aws, profile, keys).await,
        Step::DeleteInstanceProfile { profile } => iam::delete_instance_profile(aws, profile).await,

        Step::CreateBucket { name, region, tags } => s3::create_bucket(aws, name, region.as_str(), tags).await,
        Step::PutBucketTagging { name, region, tags } => s3::put_bucket_tagging(aws, name, region.as_str(), tags).await,
        Step::SetPublicAccessBlock { name, region, block } => {
            s3::set_public_access_block(aws, name, region.as_str(), *block).await
        }
        Step::PutBucketEncryption { name, region, encryption } => {
            s3::put_bucket_encryption(aws, name, region.as_str(), encryption).await
        }
        Step::PutBucketVersioning { name, region, enabled } => {
            s3::put_bucket_versioning(aws, name, region.as_str(), *enabled).await
        }
        Step::PutBucketLifecycle { name, region, expire_after_days } => {
            s3::put_bucket_lifecycle(aws, name, region.as_str(), *expire_after_days).await
        }
        Step::EmptyBucket { name, region } => s3::empty_bucket(aws, name, region.as_str()).await,
        Step::DeleteBucket { name, region } => s3::delete_bucket(aws, name, region.as_str()).await,

        Step::CreateTopic { name, region, attributes, tags } => {
            sns::create_topic(aws, name, region.as_str(), attributes, tags).await
        }
        Step::SetTopicAttribute { topic_arn, region, attribute, value } => {
            sns::set_topic_attribute(aws, topic_arn, region.as_str(), attribute, value).await
        }
        Step::Subscribe { topic_arn, region, protocol, endpoint } => {
            sns::subscribe(aws, topic_arn, region.as_str(), protocol, endpoint).await
        }
        Step::Unsubscribe { subscription_arn, region } => {
            sns::unsubscribe(aws, subscription_arn, region.as_str()).await
        }
        Step::TagTopic { topic_arn, region, tags } => sns::tag_topic(aws, topic_arn, region.as_str(), tags).await,
        Step::UntagTopic { topic_arn, region, keys } => sns::untag_topic(aws, topic_arn, region.as_str(), keys).await,
        Step::DeleteTopic { topic_arn, region } => sns::delete_topic(aws, topic_arn, region.as_str()).await,

        Step::UploadPackage { bucket, region, key, source, sha256 } => {
            packages::upload_package(aws, bucket, region.as_str(), key, source, sha256).await
        }
        Step::BindPackageGroup { bucket, region, key, record } => {
            packages::bind_package_group(aws, bucket, region.as_str(), key, record).await
        }

        // Boxed: the pipeline's state machine is large, and would otherwise sit on the stack of whoever awaits it.
        Step::BuildImage { build, wait } => Box::pin(super::build::run(aws, build, *wait)).await,
        Step::TagImage { image_id, region, tags } => images::tag_image(aws, image_id, region.as_str(), tags).await,
        Step::UntagImage { image_id, region, keys } => images::untag_image(aws, image_id, region.as_str(), keys).await,
        Step::SetImageDescription { image_id, region, description } => {
            images::set_image_description(aws, image_id, region.as_str(), description).await
        }
        Step::CopyImage {
            source,
            source_region,
            region,
            name,
            description,
            encrypted,
            kms_key,
            tags,
            client_token,
        } => {
            let copy = distribution::Copy {
                source,
                source_region,
                region,
                name,
                description: description.as_deref(),
                encrypted: *encrypted,
                kms_key: kms_key.as_deref(),
                tags,
                client_token,
            };
            // Boxed like the build: waiting for a copy is a long-lived state machine.
            Box::pin(distribution::copy_image(aws, &copy)).await
        }
        Step::SetLaunchPermissions { image, region, add, remove } => {
            distribution::set_launch_permissions(aws, image, region, add, remove).await
        }
        Step::SetSnapshotPermissions { image, region, add, remove } => {
            distribution::set_snapshot_permissions(aws, image, region, add, remove).await
        }
        Step::PutImageParameter { name, region, image } => {
            distribution::put_image_parameter(aws, name, region, image).await
        }
        Step::DeregisterImage { image_id, region, snapshot_ids } => {
            distribution::deregister_image(aws, image_id, region, snapshot_ids).await
        }
        Step::EnableImageDeprecation { image_id, region, deprecate_at } => {
            distribution::enable_image_deprecation(aws, image_id, region, deprecate_at).await
        }
        Step::EnableDeregistrationProtection { image_id, region } => {
            distribution::enable_deregistration_protection(aws, image_id, region).await
        }
    }
}

/// Whether an existing resource met by a create is the one the step creates: same stack, same resource. Returns
/// why not, for the error message.
fn check_owner(what: &str, wanted: &Tags, existing: &Tags) -> Result<(), String> {
    let Some(stack) = wanted.get(STACK_TAG) else {
        return Err(format!("{what} already exists, and the step carries no {STACK_TAG} tag to prove it is ours"));
    };
    if existing.get(STACK_TAG) == Some(stack) && existing.get(RESOURCE_TAG) == wanted.get(RESOURCE_TAG) {
        return Ok(());
    }
    let owner = match (existing.get(STACK_TAG), existing.get(RESOURCE_TAG)) {
        (None, _) => "it has no imagectl ownership tags".to_owned(),
        (Some(s), r) => format!("it belongs to {STACK_TAG}={s}, {RESOURCE_TAG}={}", r.map_or("(none)", String::as_str)),
    };
    Err(format!(
        "{what} already exists and is not this stack's ({owner}); rename the resource, delete the existing one, or adopt it explicitly"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn owner_check_needs_same_stack_and_resource() {
        let wanted = tags(&[(STACK_TAG, "web"), (RESOURCE_TAG, "Role/build"), ("team", "a")]);
        assert!(check_owner("role build", &wanted, &tags(&[(STACK_TAG, "web"), (RESOURCE_TAG, "Role/build")])).is_ok());
        let other = check_owner("role build", &wanted, &tags(&[(STACK_TAG, "db"), (RESOURCE_TAG, "Role/build")]));
        assert!(other.unwrap_err().contains("imagectl:stack=db"));
        let untagged = check_owner("role build", &wanted, &Tags::new());
        assert!(untagged.unwrap_err().contains("no imagectl ownership tags"));
        assert!(check_owner("role build", &Tags::new(), &Tags::new()).is_err());
    }
}
