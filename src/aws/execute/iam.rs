//! IAM role and instance-profile steps.

use aws_sdk_iam::types::Tag;

use super::check_owner;
use crate::aws::error::{Absent, Context};
use crate::aws::read::iam_tags;
use crate::aws::{Aws, AwsError};
use crate::model::Tags;

const NO_SUCH_ENTITY: &[&str] = &["NoSuchEntity"];

pub(super) async fn create_role(
    aws: &Aws,
    name: &str,
    path: &str,
    trust_policy: &str,
    description: Option<&str>,
    max_session_duration: Option<u32>,
    tags: &Tags,
) -> Result<(), AwsError> {
    let operation = format!("CreateRole {name}");
    let request = aws
        .iam()
        .create_role()
        .role_name(name)
        .path(path)
        .assume_role_policy_document(trust_policy)
        .set_description(description.map(str::to_owned))
        .set_max_session_duration(max_session_duration.map(seconds))
        .set_tags(Some(sdk_tags(tags, &operation)?));
    match request.send().await.during(&operation) {
        Err(e) if e.has_code("EntityAlreadyExists") => {
            let existing = aws.iam().get_role().role_name(name).send().await.during(format_args!("GetRole {name}"))?;
            let existing = iam_tags(existing.role().map(|r| r.tags()).unwrap_or_default());
            check_owner(&format!("role {name}"), tags, &existing).map_err(|message| AwsError { message, ..e })
        }
        result => result.map(drop),
    }
}

pub(super) async fn update_trust_policy(aws: &Aws, role: &str, document: &str) -> Result<(), AwsError> {
    let request = aws.iam().update_assume_role_policy().role_name(role).policy_document(document);
    request.send().await.during(format_args!("UpdateAssumeRolePolicy {role}")).map(drop)
}

/// `None` leaves a field as it is (that is UpdateRole's contract); an empty description clears it.
pub(super) async fn update_role(
    aws: &Aws,
    role: &str,
    description: Option<&str>,
    max_session_duration: Option<u32>,
) -> Result<(), AwsError> {
    let request = aws
        .iam()
        .update_role()
        .role_name(role)
        .set_description(description.map(str::to_owned))
        .set_max_session_duration(max_session_duration.map(seconds));
    request.send().await.during(format_args!("UpdateRole {role}")).map(drop)
}

pub(super) async fn put_role_policy(aws: &Aws, role: &str, policy: &str, document: &str) -> Result<(), AwsError> {
    let request = aws.iam().put_role_policy().role_name(role).policy_name(policy).policy_document(document);
    request.send().await.during(format_args!("PutRolePolicy {role} {policy}")).map(drop)
}

pub(super) async fn delete_role_policy(aws: &Aws, role: &str, policy: &str) -> Result<(), AwsError> {
    let request = aws.iam().delete_role_policy().role_name(role).policy_name(policy);
    request.send().await.during(format_args!("DeleteRolePolicy {role} {policy}")).absent_on(NO_SUCH_ENTITY).map(drop)
}

pub(super) async fn attach_role_policy(aws: &Aws, role: &str, policy_arn: &str) -> Result<(), AwsError> {
    let request = aws.iam().attach_role_policy().role_name(role).policy_arn(policy_arn);
    request.send().await.during(format_args!("AttachRolePolicy {role} {policy_arn}")).map(drop)
}

pub(super) async fn detach_role_policy(aws: &Aws, role: &str, policy_arn: &str) -> Result<(), AwsError> {
    let request = aws.iam().detach_role_policy().role_name(role).policy_arn(policy_arn);
    let result = request.send().await.during(format_args!("DetachRolePolicy {role} {policy_arn}"));
    result.absent_on(NO_SUCH_ENTITY).map(drop)
}

pub(super) async fn tag_role(aws: &Aws, role: &str, tags: &Tags) -> Result<(), AwsError> {
    let operation = format!("TagRole {role}");
    let request = aws.iam().tag_role().role_name(role).set_tags(Some(sdk_tags(tags, &operation)?));
    request.send().await.during(&operation).map(drop)
}

pub(super) async fn untag_role(aws: &Aws, role: &str, keys: &[String]) -> Result<(), AwsError> {
    let request = aws.iam().untag_role().role_name(role).set_tag_keys(Some(keys.to_vec()));
    request.send().await.during(format_args!("UntagRole {role}")).absent_on(NO_SUCH_ENTITY).map(drop)
}

pub(super) async fn delete_role(aws: &Aws, role: &str) -> Result<(), AwsError> {
    let request = aws.iam().delete_role().role_name(role);
    request.send().await.during(format_args!("DeleteRole {role}")).absent_on(NO_SUCH_ENTITY).map(drop)
}

pub(super) async fn create_instance_profile(aws: &Aws, name: &str, path: &str, tags: &Tags) -> Result<(), AwsError> {
    let operation = format!("CreateInstanceProfile {name}");
    let request = aws
        .iam()
        .create_instance_profile()
        .instance_profile_name(name)
        .path(path)
        .set_tags(Some(sdk_tags(tags, &operation)?));
    match request.send().await.during(&operation) {
        Err(e) if e.has_code("EntityAlreadyExists") => {
            let request = aws.iam().get_instance_profile().instance_profile_name(name);
            let existing = request.send().await.during(format_args!("GetInstanceProfile {name}"))?;
            let existing = iam_tags(existing.instance_profile().map(|p| p.tags()).unwrap_or_default());
            check_owner(&format!("instance profile {name}"), tags, &existing)
                .map_err(|message| AwsError { message, ..e })
        }
        result => result.map(drop),
    }
}

/// A profile holds at most one role, so adding the role it already holds fails (`LimitExceeded`): that failure,
/// whatever its code, counts as done once the profile is seen to hold the role.
pub(super) async fn add_role_to_instance_profile(aws: &Aws, profile: &str, role: &str) -> Result<(), AwsError> {
    let request = aws.iam().add_role_to_instance_profile().instance_profile_name(profile).role_name(role);
    let Err(error) = request.send().await.during(format_args!("AddRoleToInstanceProfile {profile} {role}")) else {
        return Ok(());
    };
    if error.code.is_none() || error.has_code("NoSuchEntity") {
        return Err(error);
    }
    let request = aws.iam().get_instance_profile().instance_profile_name(profile);
    let existing = request.send().await.during(format_args!("GetInstanceProfile {profile}"))?;
    let holds_role = existing.instance_profile().is_some_and(|p| p.roles().iter().any(|r| r.role_name() == role));
    if holds_role {
        Ok(())
    } else {
        Err(error)
    }
}

pub(super) async fn remove_role_from_instance_profile(aws: &Aws, profile: &str, role: &str) -> Result<(), AwsError> {
    let request = aws.iam().remove_role_from_instance_profile().instance_profile_name(profile).role_name(role);
    let result = request.send().await.during(format_args!("RemoveRoleFromInstanceProfile {profile} {role}"));
    result.absent_on(NO_SUCH_ENTITY).map(drop)
}

pub(super) async fn tag_instance_profile(aws: &Aws, profile: &str, tags: &Tags) -> Result<(), AwsError> {
    let operation = format!("TagInstanceProfile {profile}");
    let request =
        aws.iam().tag_instance_profile().instance_profile_name(profile).set_tags(Some(sdk_tags(tags, &operation)?));
    request.send().await.during(&operation).map(drop)
}

pub(super) async fn untag_instance_profile(aws: &Aws, profile: &str, keys: &[String]) -> Result<(), AwsError> {
    let request = aws.iam().untag_instance_profile().instance_profile_name(profile).set_tag_keys(Some(keys.to_vec()));
    let result = request.send().await.during(format_args!("UntagInstanceProfile {profile}"));
    result.absent_on(NO_SUCH_ENTITY).map(drop)
}

pub(super) async fn delete_instance_profile(aws: &Aws, profile: &str) -> Result<(), AwsError> {
    let request = aws.iam().delete_instance_profile().instance_profile_name(profile);
    let result = request.send().await.during(format_args!("DeleteInstanceProfile {profile}"));
    result.absent_on(NO_SUCH_ENTITY).map(drop)
}

fn sdk_tags(tags: &Tags, operation: &str) -> Result<Vec<Tag>, AwsError> {
    tags.iter().map(|(key, value)| Tag::builder().key(key).value(value).build().during(operation)).collect()
}

/// Session durations are at most 12 hours, far inside i32.
fn seconds(duration: u32) -> i32 {
    i32::try_from(duration).unwrap_or(i32::MAX)
}
