//! Reads the live state a `ReadScope` asks for: the kinds concurrently, each with the fewest calls its API
//! allows (see the submodules), every request through `Aws::limited`.

mod distribution;
mod ec2;
mod iam;
mod packages;
mod s3;
mod sns;

use std::collections::{BTreeMap, BTreeSet};

use super::{Aws, AwsError};
use crate::live::{LiveState, ReadScope};
use crate::model::AccountId;

pub(super) use ec2::{
    filter as ec2_filter, sdk_tags as ec2_sdk_tags, snapshot_ids, tags as ec2_tags, LIVE_INSTANCE_STATES,
};
pub(super) use iam::tags as iam_tags;
pub(super) use packages::{get_object_with, parse_report, SHA256_METADATA};
pub(super) use s3::{bucket_region, tags as s3_tags, EXPIRE_RULE_ID};

pub(super) async fn read_live(aws: &Aws, scope: &ReadScope) -> Result<LiveState, AwsError> {
    let (account, iam, s3, sns, ec2, parameters) = tokio::try_join!(
        aws.account_id(),
        iam::read(aws, scope),
        s3::read(aws, scope),
        sns::read(aws, scope),
        ec2::read(aws, scope),
        distribution::parameters(aws, scope)
    )?;
    // Package groups and build reports live in buckets: read once the bucket listing has told their regions.
    // Permissions and usage are those of the stack's images: read once they are listed.
    let bucket_regions = s3.buckets.iter().map(|(name, bucket)| (name.clone(), bucket.region.to_string())).collect();
    let (packages, distribution) = tokio::try_join!(
        packages::read(aws, scope, &ec2, &bucket_regions),
        distribution::read(aws, scope, &ec2.images)
    )?;
    let mut external = s3.external;
    external.extend(sns.external);
    external.extend(iam_external(&scope.external_roles, "role", &account, &iam.all_roles));
    external.extend(iam_external(
        &scope.external_instance_profiles,
        "instance-profile",
        &account,
        &iam.all_instance_profiles,
    ));
    Ok(LiveState {
        account: Some(account),
        roles: iam.roles,
        instance_profiles: iam.instance_profiles,
        buckets: s3.buckets,
        topics: sns.topics,
        external,
        base_images: ec2.base_images,
        images: ec2.images,
        build_instances: ec2.build_instances,
        package_groups: packages.package_groups,
        packages_present: packages.packages_present,
        build_reports: packages.build_reports,
        launch_permissions: distribution.launch_permissions,
        snapshot_permissions: distribution.snapshot_permissions,
        parameters,
        images_in_use: distribution.images_in_use,
    })
}

/// Answers IAM ARNs of this account from the complete listings (a name is unique in an account whatever its
/// path). ARNs of other accounts are left out: this account's credentials cannot see them, so whether they exist
/// is unknown rather than false.
fn iam_external(
    arns: &BTreeSet<String>,
    resource_type: &str,
    account: &AccountId,
    names: &BTreeSet<String>,
) -> BTreeMap<String, bool> {
    arns.iter()
        .filter_map(|arn| {
            let parts: Vec<&str> = arn.splitn(6, ':').collect();
            let (owner, resource) = (*parts.get(4)?, *parts.get(5)?);
            if owner != account.as_str() {
                return None;
            }
            let exists = match resource.split_once('/') {
                Some((kind, path_and_name)) if kind == resource_type => {
                    names.contains(path_and_name.rsplit('/').next().unwrap_or_default())
                }
                _ => false,
            };
            Some((arn.clone(), exists))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_external_answers_this_accounts_arns_by_name() {
        let account = AccountId::parse("123456789012").unwrap();
        let names: BTreeSet<String> = ["build".to_owned()].into();
        let arns: BTreeSet<String> = [
            "arn:aws:iam::123456789012:role/build",
            "arn:aws:iam::123456789012:role/service/build",
            "arn:aws:iam::123456789012:role/missing",
            "arn:aws:iam::123456789012:instance-profile/build",
            "arn:aws:iam::210987654321:role/build",
        ]
        .map(str::to_owned)
        .into();
        let answers = iam_external(&arns, "role", &account, &names);
        let expected: BTreeMap<String, bool> = [
            ("arn:aws:iam::123456789012:role/build", true),
            ("arn:aws:iam::123456789012:role/service/build", true),
            ("arn:aws:iam::123456789012:role/missing", false),
            // A profile ARN where a role is expected does not name a role.
            ("arn:aws:iam::123456789012:instance-profile/build", false),
            // Another account's role is left out: unknown, not missing.
        ]
        .map(|(arn, exists)| (arn.to_owned(), exists))
        .into();
        assert_eq!(answers, expected);
    }
}
