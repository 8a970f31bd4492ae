//! Image steps that change an existing image in place: its tags (kept the same on its snapshots, which carry the
//! ownership and cost tags too) and its description.

use aws_sdk_ec2::types::{AttributeValue, Tag};

use crate::aws::error::{Absent, Context};
use crate::aws::read::{ec2_sdk_tags, snapshot_ids};
use crate::aws::{Aws, AwsError};
use crate::model::Tags;

const IMAGE_GONE: &[&str] = &["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"];

/// The image and its snapshots, the resources its tags go on.
async fn image_and_snapshots(aws: &Aws, image_id: &str, region: &str) -> Result<Option<Vec<String>>, AwsError> {
    let request = aws.ec2(region).describe_images().image_ids(image_id);
    let answer = request.send().await.during(format_args!("DescribeImages {image_id}")).absent_on(IMAGE_GONE)?;
    let Some(image) = answer.as_ref().and_then(|a| a.images().first()) else {
        return Ok(None);
    };
    Ok(Some(std::iter::once(image_id.to_owned()).chain(snapshot_ids(image)).collect()))
}

pub(super) async fn tag_image(aws: &Aws, image_id: &str, region: &str, tags: &Tags) -> Result<(), AwsError> {
    let operation = format!("CreateTags {image_id}");
    let Some(resources) = image_and_snapshots(aws, image_id, region).await? else {
        return Err(AwsError::new(
            operation,
            Some("InvalidAMIID.NotFound"),
            format!("image {image_id} does not exist in {region}"),
        ));
    };
    let request = aws.ec2(region).create_tags().set_resources(Some(resources)).set_tags(Some(ec2_sdk_tags(tags)));
    request.send().await.during(&operation).map(drop)
}

pub(super) async fn untag_image(aws: &Aws, image_id: &str, region: &str, keys: &[String]) -> Result<(), AwsError> {
    let Some(resources) = image_and_snapshots(aws, image_id, region).await? else {
        return Ok(());
    };
    let tags = keys.iter().map(|key| Tag::builder().key(key).build()).collect();
    let request = aws.ec2(region).delete_tags().set_resources(Some(resources)).set_tags(Some(tags));
    request.send().await.during(format_args!("DeleteTags {image_id}")).absent_on(IMAGE_GONE).map(drop)
}

pub(super) async fn set_image_description(
    aws: &Aws,
    image_id: &str,
    region: &str,
    description: &str,
) -> Result<(), AwsError> {
    let request = aws
        .ec2(region)
        .modify_image_attribute()
        .image_id(image_id)
        .description(AttributeValue::builder().value(description).build());
    request.send().await.during(format_args!("ModifyImageAttribute {image_id} description")).map(drop)
}
