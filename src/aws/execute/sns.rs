//! SNS topic and subscription steps, through a client of the topic's region.

use aws_sdk_sns::types::Tag;

use crate::aws::error::{Absent, Context};
use crate::aws::{Aws, AwsError};
use crate::model::Tags;

/// What SNS answers for a topic or subscription that does not exist.
const MISSING: &[&str] = &["NotFound", "ResourceNotFound"];

/// `CreateTopic` is idempotent in SNS: the same name with the same attributes and tags returns the existing topic.
pub(super) async fn create_topic(
    aws: &Aws,
    name: &str,
    region: &str,
    attributes: &std::collections::BTreeMap<String, String>,
    tags: &Tags,
) -> Result<(), AwsError> {
    let operation = format!("CreateTopic {name}");
    let attributes = (!attributes.is_empty()).then(|| attributes.clone().into_iter().collect());
    let request = aws
        .sns(region)
        .create_topic()
        .name(name)
        .set_attributes(attributes)
        .set_tags(Some(sdk_tags(tags, &operation)?));
    request.send().await.during(&operation).map(drop)
}

pub(super) async fn set_topic_attribute(
    aws: &Aws,
    topic_arn: &str,
    region: &str,
    attribute: &str,
    value: &str,
) -> Result<(), AwsError> {
    let request =
        aws.sns(region).set_topic_attributes().topic_arn(topic_arn).attribute_name(attribute).attribute_value(value);
    request.send().await.during(format_args!("SetTopicAttributes {topic_arn} {attribute}")).map(drop)
}

/// SNS returns the existing subscription for the same topic, protocol and endpoint.
pub(super) async fn subscribe(
    aws: &Aws,
    topic_arn: &str,
    region: &str,
    protocol: &str,
    endpoint: &str,
) -> Result<(), AwsError> {
    let request = aws.sns(region).subscribe().topic_arn(topic_arn).protocol(protocol).endpoint(endpoint);
    request.send().await.during(format_args!("Subscribe {topic_arn} {protocol}:{endpoint}")).map(drop)
}

pub(super) async fn unsubscribe(aws: &Aws, subscription_arn: &str, region: &str) -> Result<(), AwsError> {
    let operation = format!("Unsubscribe {subscription_arn}");
    if !subscription_arn.starts_with("arn:") {
        // SNS has no ARN for a subscription nobody confirmed, hence no way to remove it before it lapses.
        return Err(AwsError::new(
            operation,
            None,
            "a subscription pending confirmation cannot be removed; SNS deletes it after 3 days unconfirmed",
        ));
    }
    let request = aws.sns(region).unsubscribe().subscription_arn(subscription_arn);
    request.send().await.during(&operation).absent_on(MISSING).map(drop)
}

pub(super) async fn tag_topic(aws: &Aws, topic_arn: &str, region: &str, tags: &Tags) -> Result<(), AwsError> {
    let operation = format!("TagResource {topic_arn}");
    let request = aws.sns(region).tag_resource().resource_arn(topic_arn).set_tags(Some(sdk_tags(tags, &operation)?));
    request.send().await.during(&operation).map(drop)
}

pub(super) async fn untag_topic(aws: &Aws, topic_arn: &str, region: &str, keys: &[String]) -> Result<(), AwsError> {
    let request = aws.sns(region).untag_resource().resource_arn(topic_arn).set_tag_keys(Some(keys.to_vec()));
    request.send().await.during(format_args!("UntagResource {topic_arn}")).absent_on(MISSING).map(drop)
}

pub(super) async fn delete_topic(aws: &Aws, topic_arn: &str, region: &str) -> Result<(), AwsError> {
    let request = aws.sns(region).delete_topic().topic_arn(topic_arn);
    request.send().await.during(format_args!("DeleteTopic {topic_arn}")).absent_on(MISSING).map(drop)
}

fn sdk_tags(tags: &Tags, operation: &str) -> Result<Vec<Tag>, AwsError> {
    tags.iter().map(|(key, value)| Tag::builder().key(key).value(value).build().during(operation)).collect()
}
