//! Reads roles and instance profiles with account-wide listings instead of one call per resource.
//!
//! Roles: `GetAccountAuthorizationDetails` (Filter=Role) gives trust policy, inline and managed policies and
//! tags of every role, 1,000 per page. Its `RoleDetail` has no description or maximum session duration; `ListRoles`
//! adds them at one call per 1,000 roles of the account, where `GetRole` would cost one call per role kept.
//! Instance profiles: `ListInstanceProfiles`; AWS leaves tags out of that listing, so `GetInstanceProfile` runs per
//! profile whose listing carried none (one call, as `ListInstanceProfileTags` would be, which the emulator lacks).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_iam::types::{EntityType, RoleDetail, Tag};
use futures::future::try_join_all;

use crate::aws::error::{Absent, Context};
use crate::aws::{Aws, AwsError};
use crate::live::{owned_by, LiveInstanceProfile, LiveRole, ReadScope};
use crate::model::Tags;

/// IAM's largest page for these listings.
const PAGE: i32 = 1000;

pub(super) struct IamState {
    pub roles: BTreeMap<String, LiveRole>,
    pub instance_profiles: BTreeMap<String, LiveInstanceProfile>,
    /// Every role and instance profile name in the account, to answer whether external references exist.
    pub all_roles: BTreeSet<String>,
    pub all_instance_profiles: BTreeSet<String>,
}

pub(super) async fn read(aws: &Aws, scope: &ReadScope) -> Result<IamState, AwsError> {
    let ((roles, all_roles), (instance_profiles, all_instance_profiles)) =
        tokio::try_join!(read_roles(aws, scope), read_instance_profiles(aws, scope))?;
    Ok(IamState { roles, instance_profiles, all_roles, all_instance_profiles })
}

async fn read_roles(aws: &Aws, scope: &ReadScope) -> Result<(BTreeMap<String, LiveRole>, BTreeSet<String>), AwsError> {
    const DETAILS: &str = "GetAccountAuthorizationDetails";
    let mut kept = BTreeMap::new();
    let mut all = BTreeSet::new();
    let mut pages =
        aws.iam().get_account_authorization_details().filter(EntityType::Role).max_items(PAGE).into_paginator().send();
    while let Some(page) = aws.limited(pages.next()).await {
        for detail in page.during(DETAILS)?.role_detail_list() {
            let Some(name) = detail.role_name() else {
                continue;
            };
            all.insert(name.to_owned());
            let tags = tags(detail.tags());
            if scope.roles.contains(name) || owned_by(&tags, &scope.stack) {
                kept.insert(name.to_owned(), live_role(name, detail, tags)?);
            }
        }
    }
    if kept.is_empty() {
        return Ok((kept, all));
    }
    let mut pages = aws.iam().list_roles().max_items(PAGE).into_paginator().send();
    while let Some(page) = aws.limited(pages.next()).await {
        for role in page.during("ListRoles")?.roles() {
            if let Some(live) = kept.get_mut(role.role_name()) {
                live.description = role.description().map(str::to_owned);
                live.max_session_duration = role.max_session_duration().and_then(|d| u32::try_from(d).ok());
            }
        }
    }
    Ok((kept, all))
}

fn live_role(name: &str, detail: &RoleDetail, tags: Tags) -> Result<LiveRole, AwsError> {
    let operation = || format!("GetAccountAuthorizationDetails (role {name})");
    let document = |raw: Option<&str>, what: &str| {
        policy_document(raw.unwrap_or_default())
            .map_err(|e| AwsError::new(operation(), None, format!("the {what} is not a JSON policy document: {e}")))
    };
    let mut inline_policies = BTreeMap::new();
    for policy in detail.role_policy_list() {
        let policy_name = policy.policy_name().unwrap_or_default();
        inline_policies.insert(
            policy_name.to_owned(),
            document(policy.policy_document(), &format!("inline policy {policy_name}"))?,
        );
    }
    Ok(LiveRole {
        name: name.to_owned(),
        arn: detail.arn().unwrap_or_default().to_owned(),
        path: detail.path().unwrap_or("/").to_owned(),
        // Filled from ListRoles.
        description: None,
        trust_policy: document(detail.assume_role_policy_document(), "trust policy")?,
        managed_policies: detail
            .attached_managed_policies()
            .iter()
            .filter_map(|p| p.policy_arn())
            .map(str::to_owned)
            .collect(),
        inline_policies,
        max_session_duration: None,
        tags,
    })
}

async fn read_instance_profiles(
    aws: &Aws,
    scope: &ReadScope,
) -> Result<(BTreeMap<String, LiveInstanceProfile>, BTreeSet<String>), AwsError> {
    let mut listed = Vec::new();
    let mut pages = aws.iam().list_instance_profiles().max_items(PAGE).into_paginator().send();
    while let Some(page) = aws.limited(pages.next()).await {
        for profile in page.during("ListInstanceProfiles")?.instance_profiles() {
            listed.push(LiveInstanceProfile {
                name: profile.instance_profile_name().to_owned(),
                arn: profile.arn().to_owned(),
                path: profile.path().to_owned(),
                roles: profile.roles().iter().map(|r| r.role_name().to_owned()).collect(),
                tags: tags(profile.tags()),
            });
        }
    }
    let all = listed.iter().map(|p| p.name.clone()).collect();
    // Ownership is in the tags, so every untagged-looking profile of the account needs its tags read.
    let with_tags = try_join_all(listed.into_iter().map(|mut profile| async move {
        if profile.tags.is_empty() {
            let request = aws.iam().get_instance_profile().instance_profile_name(&profile.name);
            let answer = aws
                .limited(request.send())
                .await
                .during(format_args!("GetInstanceProfile {}", profile.name))
                // Deleted since it was listed.
                .absent_on(&["NoSuchEntity"])?;
            let Some(answer) = answer else {
                return Ok(None);
            };
            profile.tags = tags(answer.instance_profile().map(|p| p.tags()).unwrap_or_default());
        }
        Ok::<_, AwsError>(Some(profile))
    }))
    .await?;
    let kept = with_tags
        .into_iter()
        .flatten()
        .filter(|p| scope.instance_profiles.contains(&p.name) || owned_by(&p.tags, &scope.stack))
        .map(|p| (p.name.clone(), p))
        .collect();
    Ok((kept, all))
}

pub(in crate::aws) fn tags(tags: &[Tag]) -> Tags {
    tags.iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect()
}

/// IAM returns policy documents URL-encoded (RFC 3986); some implementations return the JSON as is, which is
/// told apart safely because encoded JSON never starts with `{`.
pub(in crate::aws) fn policy_document(raw: &str) -> Result<serde_json::Value, String> {
    let trimmed = raw.trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed).map_err(|e| e.to_string());
    }
    let decoded = urlencoding::decode(raw).map_err(|e| format!("not URL-encoded UTF-8: {e}"))?;
    serde_json::from_str(&decoded).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::policy_document;
    use serde_json::json;

    #[test]
    fn policy_documents_decode_encoded_and_plain_json() {
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22s3%3AGetObject%22%2C%22Resource%22%3A%22arn%3Aaws%3As3%3A%3A%3Ab%20c%2F%2A%22%7D%5D%7D";
        let expected = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b c/*"}]});
        assert_eq!(policy_document(encoded).unwrap(), expected);
        assert_eq!(policy_document(&expected.to_string()).unwrap(), expected);
        // A literal percent sign in plain JSON stays as it is.
        assert_eq!(policy_document(r#"{"Sid":"100%25"}"#).unwrap(), json!({"Sid": "100%25"}));
        assert!(policy_document("%7Bnot json").is_err());
    }
}
